/** @jest-environment ./test/unit/engine/ort-environment.js */
import { spawnSync } from 'child_process';
import { existsSync } from 'fs';
import { mkdtemp, rm } from 'fs/promises';
import { tmpdir } from 'os';
import { join, resolve } from 'path';
import { Writable } from 'stream';
import * as ort from 'onnxruntime-node';
import { Dataset } from '../../../federation/data/dataset';
import { writeIdxSplit } from '../../../federation/data/idx-writer';
import { SeededRandom } from '../../../federation/random';
import { TrainFlags, learningRateAt, trainCommand } from '../../../operator/cli/train';

/** imageSplit makes 8x8 byte images whose class is the brighter half (top or bottom). */
function imageSplit(count: number, seed: number): Dataset {
  const rng = new SeededRandom(seed);
  const features = new Float32Array(count * 64);
  const labels = new Int32Array(count);
  for (let i = 0; i < count; i++) {
    labels[i] = rng.next() < 0.5 ? 0 : 1;
    for (let p = 0; p < 64; p++) {
      const bright = p < 32 === (labels[i] === 0);
      features[i * 64 + p] = Math.floor(rng.next() * 128 + (bright ? 127 : 0)) / 255;
    }
  }
  return { features, sampleShape: [1, 8, 8], labels, numClasses: 2, count, source: 'synthetic' };
}

const baseFlags: TrainFlags = {
  model: 'logreg',
  data: '',
  epochs: '2',
  batchSize: '16',
  optimizer: 'sgd',
  momentum: '0.9',
  weightDecay: '0',
  seed: '1',
  provider: 'cpu',
  threads: '1',
  lrSchedule: 'cosine',
};

const quiet = () => new Writable({ write: (_chunk, _enc, done) => done() });

describe('flotilla train', () => {
  let dir: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'flotilla-train-'));
    await writeIdxSplit(dir, 'train', imageSplit(200, 1));
    await writeIdxSplit(dir, 'test', imageSplit(100, 2));
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test('prints one line per epoch with loss, accuracies and time, and writes a loadable model', async () => {
    const lines: string[] = [];
    const out = join(dir, 'model.onnx');
    await trainCommand({ ...baseFlags, data: dir, out }, (text) => lines.push(text), quiet());

    const epochs = lines.filter((l) => l.startsWith('epoch'));
    expect(epochs).toHaveLength(2);
    expect(epochs[1]).toMatch(
      /^epoch 2\/2 {2}loss \d+\.\d{4} {2}train acc \d+\.\d{2}% {2}test loss \d+\.\d{4} {2}test acc \d+\.\d{2}% {2}\d+\.\ds/,
    );
    const testAccuracy = Number(/test acc (\d+\.\d+)%/.exec(epochs[1])![1]);
    expect(testAccuracy).toBeGreaterThan(90);

    const session = await ort.InferenceSession.create(out);
    const result = await session.run({
      input: new ort.Tensor('float32', new Float32Array(3 * 64), [3, 1, 8, 8]),
    });
    expect(result['logits'].dims).toEqual([3, 2]);
    await session.release();
  });

  test('refuses an unknown model name and a bad number, naming the option and the value', async () => {
    await expect(
      trainCommand({ ...baseFlags, data: dir, model: 'resnet' }, () => {}, quiet()),
    ).rejects.toThrow(
      '--model: must be one of logreg, mlp, cnn or a path to an .onnx file, got "resnet"',
    );
    await expect(
      trainCommand({ ...baseFlags, data: dir, epochs: 'ten' }, () => {}, quiet()),
    ).rejects.toThrow('--epochs: must be an integer >= 1, got "ten"');
    await expect(
      trainCommand({ ...baseFlags, data: dir, optimizer: 'rmsprop' }, () => {}, quiet()),
    ).rejects.toThrow('--optimizer: must be one of sgd, adam, got "rmsprop"');
    await expect(
      trainCommand({ ...baseFlags, data: dir, lrSchedule: 'step' }, () => {}, quiet()),
    ).rejects.toThrow('--lr-schedule: must be one of constant, cosine, got "step"');
  });

  test('the cosine schedule starts at --lr, halves at mid-run and ends near zero', () => {
    expect(learningRateAt('cosine', 0.02, 1, 10)).toBeCloseTo(0.02, 12);
    expect(learningRateAt('cosine', 0.02, 6, 10)).toBeCloseTo(0.01, 12);
    expect(learningRateAt('cosine', 0.02, 10, 10)).toBeCloseTo(0.02 * 0.0245, 5);
    expect(learningRateAt('constant', 0.02, 10, 10)).toBe(0.02);
  });

  const root = resolve(__dirname, '..', '..', '..');
  const testIfBuilt = existsSync(join(root, 'dist', 'operator', 'cli', 'main.js'))
    ? test
    : test.skip;

  testIfBuilt('the compiled CLI prints epoch lines on stdout and JSON logs on stderr', () => {
    const run = spawnSync(
      process.execPath,
      [
        join(root, 'bin', 'flotilla.js'),
        'train',
        '--model',
        'logreg',
        '--data',
        dir,
        '--epochs',
        '1',
        '--threads',
        '1',
        '--provider',
        'cpu',
      ],
      { encoding: 'utf8' },
    );
    expect(run.status).toBe(0);
    expect(run.stdout.trim().split('\n')).toEqual([expect.stringMatching(/^epoch 1\/1 {2}loss /)]);
    const logs = run.stderr
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(logs.map((l) => l.msg)).toEqual([
      'engine execution provider selected',
      'training started',
      'epoch finished',
    ]);
    expect(logs[0]).toMatchObject({
      component: 'engine',
      requested: 'cpu',
      provider: 'cpu',
      threads: 1,
    });
  });
});
