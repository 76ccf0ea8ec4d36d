import { availableParallelism } from 'os';
import { Writable } from 'stream';
import * as ort from 'onnxruntime-node';
import { Dataset } from '../federation/data/dataset';
import { encodeModel } from '../federation/engine/graph-builder';
import { LocalTrainer } from '../federation/engine/local-trainer';
import { SeededRandom } from '../federation/engine/prng';
import { ZooModelName, buildZooModel } from '../federation/engine/zoo';
import { createLogger } from '../federation/log';

/**
 * Engine throughput: samples per second of the train-step graph (forward, backward and the
 * SGD-momentum update in one onnxruntime run) for the zoo MLP and CNN on CPU, next to the
 * inference-only throughput of the same forward graph in the same run as the baseline.
 * Synthetic 1x28x28 samples, 10 classes, batch 64. Prints figures; asserts nothing.
 *
 * Environment: BENCH_SAMPLES (default 6400 per measurement), BENCH_THREADS (default all cores).
 */

const BATCH = 64;
const SAMPLE_SHAPE = [1, 28, 28];
const CLASSES = 10;

function syntheticDataset(count: number): Dataset {
  const rng = new SeededRandom(1);
  const size = SAMPLE_SHAPE.reduce((p, d) => p * d, 1);
  return {
    features: Float32Array.from({ length: count * size }, () => rng.next()),
    sampleShape: SAMPLE_SHAPE,
    labels: Int32Array.from({ length: count }, () => Math.floor(rng.next() * CLASSES)),
    numClasses: CLASSES,
    count,
    source: 'synthetic',
  };
}

async function trainThroughput(
  name: ZooModelName,
  data: Dataset,
  threads: number,
): Promise<number> {
  const trainer = await LocalTrainer.create({
    model: buildZooModel(name, { inputShape: SAMPLE_SHAPE, numClasses: CLASSES, seed: 1 }),
    optimizer: { kind: 'sgd', lr: 0.01, momentum: 0.9 },
    batchSize: BATCH,
    seed: 1,
    executionProvider: 'cpu',
    threads,
    log: createLogger('engine', new Writable({ write: (_c, _e, done) => done() })),
  });
  try {
    // One warm-up epoch lets onnxruntime settle its memory arena before timing.
    await trainer.trainEpoch({ ...data, count: BATCH * 4 });
    const started = performance.now();
    await trainer.trainEpoch(data);
    return data.count / ((performance.now() - started) / 1000);
  } finally {
    await trainer.release();
  }
}

async function inferenceThroughput(
  name: ZooModelName,
  data: Dataset,
  threads: number,
): Promise<number> {
  const model = buildZooModel(name, { inputShape: SAMPLE_SHAPE, numClasses: CLASSES, seed: 1 });
  const session = await ort.InferenceSession.create(encodeModel(model.model), {
    executionProviders: ['cpu'],
    graphOptimizationLevel: 'all',
    executionMode: 'sequential',
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    logSeverityLevel: 3,
  });
  const size = SAMPLE_SHAPE.reduce((p, d) => p * d, 1);
  const batches = Math.floor(data.count / BATCH);
  const run = async (count: number) => {
    for (let i = 0; i < count; i++) {
      const rows = data.features.subarray(i * BATCH * size, (i + 1) * BATCH * size);
      await session.run({
        [model.inputName]: new ort.Tensor('float32', rows, [BATCH, ...SAMPLE_SHAPE]),
      });
    }
  };
  try {
    await run(4);
    const started = performance.now();
    await run(batches);
    return (batches * BATCH) / ((performance.now() - started) / 1000);
  } finally {
    await session.release();
  }
}

async function main(): Promise<void> {
  const samples = Number(process.env.BENCH_SAMPLES ?? 6400);
  const threads = Number(process.env.BENCH_THREADS ?? availableParallelism());
  const data = syntheticDataset(samples);
  console.log(
    `engine throughput: CPU, ${threads} intra-op thread(s), batch ${BATCH}, ${samples} synthetic 1x28x28 samples, onnxruntime-node ${ort.env.versions.node}`,
  );
  console.log('model   train samples/s   inference samples/s   train/inference');
  for (const name of ['mlp', 'cnn'] as const) {
    const train = await trainThroughput(name, data, threads);
    const infer = await inferenceThroughput(name, data, threads);
    console.log(
      `${name.padEnd(6)}  ${train.toFixed(0).padStart(15)}   ${infer.toFixed(0).padStart(19)}   ${(train / infer).toFixed(3).padStart(15)}`,
    );
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
