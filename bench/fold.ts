import { MeanAccumulator } from '../federation/aggregation/mean-accumulator';
import { ChunkSequence, tensorChunks } from '../federation/protocol/chunks';

/**
 * FedAvg fold throughput: how fast the aggregator folds an update into the float64 running
 * aggregate, and how fast its whole receive path runs (chunk checks, finite check, copy into
 * the staging buffer, then the fold), next to a plain memory copy of the same bytes in the
 * same run as the baseline. Prints figures; asserts nothing.
 *
 * Environment: BENCH_MODEL_MB (default 100), BENCH_REPEAT (default 5).
 */

const modelMb = Number(process.env.BENCH_MODEL_MB ?? 100);
const repeat = Number(process.env.BENCH_REPEAT ?? 5);
const size = Math.floor((modelMb * 1024 * 1024) / 4);
const bytes = size * 4;

function best(run: () => void): number {
  run();
  let fastest = Infinity;
  for (let i = 0; i < repeat; i++) {
    const start = process.hrtime.bigint();
    run();
    fastest = Math.min(fastest, Number(process.hrtime.bigint() - start) / 1e9);
  }
  return fastest;
}

function gbps(seconds: number): string {
  return `${(bytes / seconds / 1e9).toFixed(2)} GB/s`;
}

const update = new Float32Array(size);
for (let i = 0; i < size; i++) update[i] = Math.sin(i) * 1e-3;
const target = new Float32Array(size);
const aggregate = new MeanAccumulator(size);
const staging = new Float32Array(size);
const specs = [{ name: 'w', dtype: 'f32', shape: [size] }];
const chunks = [...tensorChunks([{ name: 'w', dims: [size], data: update }])];

const copy = best(() => target.set(update));
const fold = best(() => aggregate.fold(update, 100));
const receive = best(() => {
  const sequence = new ChunkSequence(specs);
  for (const c of chunks) {
    const values = sequence.accept(c).copyInto(staging);
    let norm = 0;
    for (let i = 0; i < values.length; i++) norm += values[i] * values[i];
    if (!Number.isFinite(norm)) throw new Error('not finite');
  }
  aggregate.fold(staging, 100);
});

console.log(`FedAvg fold, model ${modelMb} MB (${size} float32), best of ${repeat}`);
console.log(
  `  baseline memory copy (Float32Array.set):   ${(copy * 1000).toFixed(1)} ms  ${gbps(copy)}`,
);
console.log(
  `  fold into float64 aggregate:               ${(fold * 1000).toFixed(1)} ms  ${gbps(fold)}  (${(fold / copy).toFixed(2)}x the copy)`,
);
console.log(
  `  receive path (check, stage, fold):         ${(receive * 1000).toFixed(1)} ms  ${gbps(receive)}  (${(receive / copy).toFixed(2)}x the copy)`,
);
