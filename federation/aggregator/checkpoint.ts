import * as fs from 'fs';
import * as path from 'path';
import { TensorSpec } from '../protocol/wire';

/**
 * A checkpoint holds what the aggregator needs to resume after the round it closed: the job,
 * the round, the global model (flat float32, with its layout) and the server strategy's state.
 *
 * File format, all little-endian: the magic line `FLOTILLA-CHECKPOINT 1\n`, a uint32 length,
 * that many bytes of JSON header, then the global model's float32 values, then each state
 * vector's float32 values in the header's order.
 */
export interface Checkpoint {
  job: string;
  round: number;
  strategy: string;
  specs: TensorSpec[];
  global: Float32Array;
  state: Record<string, Float32Array>;
  /** The round's result, so a coordinator that reconnects after a restart can still read it. */
  result?: unknown;
}

const MAGIC = Buffer.from('FLOTILLA-CHECKPOINT 1\n');
const FILE_NAME = /^round-(\d{6,})\.ckpt$/;

/** KEEP_CHECKPOINTS is how many checkpoints stay on disk; older ones are removed. */
export const KEEP_CHECKPOINTS = 3;

function fileName(round: number): string {
  return `round-${String(round).padStart(6, '0')}.ckpt`;
}

/**
 * writeCheckpoint writes atomically: a temporary file in the same directory is written and
 * fsynced, renamed over the final name, and the directory is fsynced, so a crash at any point
 * leaves either the previous checkpoints or the new one complete, never a torn file.
 */
export function writeCheckpoint(dir: string, ckpt: Checkpoint): string {
  fs.mkdirSync(dir, { recursive: true });
  const stateNames = Object.keys(ckpt.state).sort();
  const header = Buffer.from(
    JSON.stringify({
      job: ckpt.job,
      round: ckpt.round,
      strategy: ckpt.strategy,
      specs: ckpt.specs,
      globalLength: ckpt.global.length,
      state: stateNames.map((name) => ({ name, length: ckpt.state[name].length })),
      result: ckpt.result,
    }),
  );
  const length = Buffer.alloc(4);
  length.writeUInt32LE(header.length);

  const final = path.join(dir, fileName(ckpt.round));
  const temp = path.join(dir, `.${fileName(ckpt.round)}.${process.pid}.tmp`);
  const fd = fs.openSync(temp, 'w', 0o600);
  try {
    for (const part of [
      MAGIC,
      length,
      header,
      bytesOf(ckpt.global),
      ...stateNames.map((n) => bytesOf(ckpt.state[n])),
    ]) {
      let written = 0;
      while (written < part.length)
        written += fs.writeSync(fd, part, written, part.length - written);
    }
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(temp, final);
  syncDirectory(dir);
  pruneCheckpoints(dir);
  return final;
}

/** readCheckpoint reads one checkpoint file, checking that its sizes add up. */
export function readCheckpoint(file: string): Checkpoint {
  const bytes = fs.readFileSync(file);
  if (bytes.length < MAGIC.length + 4 || !bytes.subarray(0, MAGIC.length).equals(MAGIC)) {
    throw new Error(`checkpoint ${file}: not a Flotilla checkpoint (bad magic)`);
  }
  const headerLength = bytes.readUInt32LE(MAGIC.length);
  let at = MAGIC.length + 4;
  const header = JSON.parse(bytes.subarray(at, at + headerLength).toString('utf8')) as {
    job: string;
    round: number;
    strategy: string;
    specs: TensorSpec[];
    globalLength: number;
    state: Array<{ name: string; length: number }>;
    result?: unknown;
  };
  at += headerLength;
  const expected = at + 4 * (header.globalLength + header.state.reduce((n, s) => n + s.length, 0));
  if (bytes.length !== expected) {
    throw new Error(`checkpoint ${file}: ${bytes.length} bytes, header describes ${expected}`);
  }
  const take = (n: number): Float32Array => {
    const out = new Float32Array(n);
    new Uint8Array(out.buffer).set(bytes.subarray(at, at + 4 * n));
    at += 4 * n;
    return out;
  };
  const global = take(header.globalLength);
  const state: Record<string, Float32Array> = {};
  for (const s of header.state) state[s.name] = take(s.length);
  return {
    job: header.job,
    round: header.round,
    strategy: header.strategy,
    specs: header.specs,
    global,
    state,
    result: header.result,
  };
}

/** listCheckpoints returns the checkpoint files of a directory, newest round first. */
export function listCheckpoints(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir)
    .map((name) => ({ name, m: FILE_NAME.exec(name) }))
    .filter((e) => e.m !== null)
    .sort((a, b) => Number(b.m![1]) - Number(a.m![1]))
    .map((e) => path.join(dir, e.name));
}

/**
 * latestCheckpoint returns the newest readable checkpoint, or undefined when there is none.
 * An unreadable file is reported through `onUnreadable` and skipped for an older one.
 */
export function latestCheckpoint(
  dir: string,
  onUnreadable: (file: string, err: Error) => void,
): Checkpoint | undefined {
  for (const file of listCheckpoints(dir)) {
    try {
      return readCheckpoint(file);
    } catch (err) {
      onUnreadable(file, err as Error);
    }
  }
  return undefined;
}

function pruneCheckpoints(dir: string): void {
  for (const file of listCheckpoints(dir).slice(KEEP_CHECKPOINTS)) fs.rmSync(file, { force: true });
}

function bytesOf(values: Float32Array): Buffer {
  return Buffer.from(values.buffer, values.byteOffset, values.byteLength);
}

function syncDirectory(dir: string): void {
  const fd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}
