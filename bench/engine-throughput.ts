import { availableParallelism } from 'os';
import { Writable } from 'stream';
import * as ort from 'onnxruntime-node';
import { Dataset } from '../federation/data/dataset';
import { encodeModel } from '../federation/engine/graph-builder';
import { LocalTrainer } from '../federation/engine/local-trainer';
import { SeededRandom } from '../federation/random';
import { engineSessionOptions } from '../federation/engine/session';
import { ZooModelName, buildZooModel } from '../federation/engine/zoo';
import { createLogger } from '../federation/log';

/**
 * Engine throughput: samples per second of the train-step graph (forward, backward and the
 * SGD-momentum update in one onnxruntime run) for the zoo MLP and CNN on CPU, next to the
 * inference-only throughput of the same forward graph in the same run as the baseline.
 * Synthetic 1x28x28 samples, 10 classes, batch 64. Prints figures; asserts nothing.
 *
 * Both sides use the engine's session options. Environment: BENCH_SAMPLES (per pass, default
 * 3200), BENCH_ROUNDS (default 5), BENCH_THREADS (default all cores).
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

/** Measure returns the samples per second of one timed pass. */
type Measure = () => Promise<number>;

async function openTrainer(name: ZooModelName, threads: number): Promise<LocalTrainer> {
  return LocalTrainer.create({
    model: buildZooModel(name, { inputShape: SAMPLE_SHAPE, numClasses: CLASSES, seed: 1 }),
    optimizer: { kind: 'sgd', lr: 0.01, momentum: 0.9 },
    batchSize: BATCH,
    seed: 1,
    executionProvider: 'cpu',
    threads,
    log: createLogger('engine', new Writable({ write: (_c, _e, done) => done() })),
  });
}

function trainMeasure(trainer: LocalTrainer, data: Dataset): Measure {
  return async () => {
    const started = performance.now();
    await trainer.trainEpoch(data);
    return data.count / ((performance.now() - started) / 1000);
  };
}

async function openInference(name: ZooModelName, threads: number): Promise<ort.InferenceSession> {
  const model = buildZooModel(name, { inputShape: SAMPLE_SHAPE, numClasses: CLASSES, seed: 1 });
  return ort.InferenceSession.create(
    encodeModel(model.model),
    engineSessionOptions('cpu', threads),
  );
}

function inferenceMeasure(session: ort.InferenceSession, data: Dataset): Measure {
  const size = SAMPLE_SHAPE.reduce((p, d) => p * d, 1);
  const batches = Math.floor(data.count / BATCH);
  return async () => {
    const started = performance.now();
    for (let i = 0; i < batches; i++) {
      const rows = data.features.subarray(i * BATCH * size, (i + 1) * BATCH * size);
      await session.run({ input: new ort.Tensor('float32', rows, [BATCH, ...SAMPLE_SHAPE]) });
    }
    return (batches * BATCH) / ((performance.now() - started) / 1000);
  };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

async function main(): Promise<void> {
  const samples = Number(process.env.BENCH_SAMPLES ?? 3200);
  const rounds = Number(process.env.BENCH_ROUNDS ?? 5);
  const threads = Number(process.env.BENCH_THREADS ?? availableParallelism());
  const data = syntheticDataset(samples);
  console.log(
    `engine throughput: CPU, ${threads} intra-op thread(s), batch ${BATCH}, ` +
      `${samples} synthetic 1x28x28 samples per pass, median of ${rounds} interleaved passes, ` +
      `onnxruntime-node ${ort.env.versions.node}`,
  );
  console.log('model   train samples/s   inference samples/s   train/inference');
  for (const name of ['mlp', 'cnn'] as const) {
    const trainer = await openTrainer(name, threads);
    const session = await openInference(name, threads);
    const train = trainMeasure(trainer, data);
    const infer = inferenceMeasure(session, data);
    // Warm-up passes settle onnxruntime's memory arenas; then the two sides alternate so that
    // load from elsewhere on the machine falls on both alike.
    await train();
    await infer();
    const trainRates: number[] = [];
    const inferRates: number[] = [];
    for (let round = 0; round < rounds; round++) {
      trainRates.push(await train());
      inferRates.push(await infer());
    }
    await trainer.release();
    await session.release();
    const t = median(trainRates);
    const i = median(inferRates);
    console.log(
      `${name.padEnd(6)}  ${t.toFixed(0).padStart(15)}   ${i.toFixed(0).padStart(19)}   ${(t / i).toFixed(3).padStart(15)}`,
    );
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
