import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import {
  KEEP_CHECKPOINTS,
  latestCheckpoint,
  listCheckpoints,
  readCheckpoint,
  writeCheckpoint,
  Checkpoint,
} from '../../../federation/aggregator/checkpoint';

function checkpoint(round: number): Checkpoint {
  return {
    job: 'ckpt',
    round,
    strategy: 'fedadam',
    specs: [{ name: 'w', dtype: 'f32', shape: [3] }],
    global: Float32Array.of(round, -round, 0.25),
    state: { m: Float32Array.of(1, 2, 3), v: Float32Array.of(4, 5, 6) },
    result: { round, outcome: 'closed' },
  };
}

describe('checkpoints', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'flotilla-ckpt-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('round-trip exactly, and leave no temporary file behind', () => {
    const file = writeCheckpoint(dir, checkpoint(7));
    expect(path.basename(file)).toBe('round-000007.ckpt');
    expect(readCheckpoint(file)).toEqual(checkpoint(7));
    expect(fs.readdirSync(dir)).toEqual(['round-000007.ckpt']);
  });

  test(`keep the newest ${KEEP_CHECKPOINTS}, newest first`, () => {
    for (let r = 1; r <= 5; r++) writeCheckpoint(dir, checkpoint(r));
    expect(listCheckpoints(dir).map((f) => path.basename(f))).toEqual([
      'round-000005.ckpt',
      'round-000004.ckpt',
      'round-000003.ckpt',
    ]);
  });

  test('a damaged newest checkpoint is reported and the one before it is used', () => {
    writeCheckpoint(dir, checkpoint(1));
    const newest = writeCheckpoint(dir, checkpoint(2));
    fs.truncateSync(newest, fs.statSync(newest).size - 4);
    const unreadable: string[] = [];
    const ckpt = latestCheckpoint(dir, (file, err) =>
      unreadable.push(`${path.basename(file)}: ${err.message}`),
    );
    expect(ckpt?.round).toBe(1);
    expect(unreadable).toHaveLength(1);
    expect(unreadable[0]).toMatch(/^round-000002\.ckpt: .* bytes, header describes \d+/);
  });

  test('an empty or missing directory has no checkpoint', () => {
    expect(latestCheckpoint(path.join(dir, 'none'), () => undefined)).toBeUndefined();
    expect(latestCheckpoint(dir, () => undefined)).toBeUndefined();
  });
});
