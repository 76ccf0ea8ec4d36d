/** @jest-environment ./test/unit/engine/ort-environment.js */
import * as ort from 'onnxruntime-node';
import { PassThrough, Writable } from 'stream';
import { Dataset } from '../../../federation/data/dataset';
import { LocalTrainer, TrainerConfig } from '../../../federation/engine/local-trainer';
import { ForwardModel } from '../../../federation/engine/model';
import { SeededRandom } from '../../../federation/random';
import { cudaProviderInstalled } from '../../../federation/engine/session';
import { NamedTensor } from '../../../federation/engine/tensor';
import { buildZooModel } from '../../../federation/engine/zoo';
import { createLogger } from '../../../federation/log';

const FEATURES = 3;
const CLASSES = 3;

/** syntheticDataset draws `count` samples whose class is the arg-max of a fixed projection. */
function syntheticDataset(
  count: number,
  sampleShape: number[],
  classes: number,
  seed: number,
): Dataset {
  const rng = new SeededRandom(seed);
  const size = sampleShape.reduce((p, d) => p * d, 1);
  const features = Float32Array.from({ length: count * size }, () => rng.next());
  const labels = new Int32Array(count);
  for (let i = 0; i < count; i++) {
    let best = 0;
    let bestScore = -Infinity;
    for (let c = 0; c < classes; c++) {
      let score = 0;
      for (let j = c; j < size; j += classes) score += features[i * size + j];
      if (score > bestScore) [best, bestScore] = [c, score];
    }
    labels[i] = best;
  }
  return { features, sampleShape, labels, numClasses: classes, count, source: `synthetic-${seed}` };
}

function logreg(seed = 3): ForwardModel {
  return buildZooModel('logreg', { inputShape: [FEATURES], numClasses: CLASSES, seed });
}

/** Float64 copies of a logistic-regression model's weight [C, D] and bias [C]. */
interface Linear {
  w: number[];
  b: number[];
}

function linearOf(params: NamedTensor[]): Linear {
  const get = (name: string) => Array.from(params.find((p) => p.name === name)!.data);
  return { w: get('fc.weight'), b: get('fc.bias') };
}

/** Hand-computed mean softmax cross-entropy gradient of a linear model over some rows. */
function handGradient(model: Linear, data: Dataset, rows: number[]): Linear {
  const gw = new Array<number>(CLASSES * FEATURES).fill(0);
  const gb = new Array<number>(CLASSES).fill(0);
  for (const r of rows) {
    const x = Array.from(data.features.subarray(r * FEATURES, (r + 1) * FEATURES));
    const logits = model.b.map(
      (bias, c) => bias + x.reduce((s, v, j) => s + v * model.w[c * FEATURES + j], 0),
    );
    const top = Math.max(...logits);
    const exps = logits.map((l) => Math.exp(l - top));
    const total = exps.reduce((a, e) => a + e, 0);
    exps.forEach((e, c) => {
      const delta = (e / total - (data.labels[r] === c ? 1 : 0)) / rows.length;
      gb[c] += delta;
      x.forEach((v, j) => (gw[c * FEATURES + j] += delta * v));
    });
  }
  return { w: gw, b: gb };
}

const map = (a: Linear, f: (v: number, key: 'w' | 'b', i: number) => number): Linear => ({
  w: a.w.map((v, i) => f(v, 'w', i)),
  b: a.b.map((v, i) => f(v, 'b', i)),
});

function expectClose(actual: Linear, expected: Linear, tolerance = 1e-5): void {
  const flat = (l: Linear) => [...l.w, ...l.b];
  const a = flat(actual);
  const e = flat(expected);
  const worst = Math.max(...a.map((v, i) => Math.abs(v - e[i])));
  expect(worst).toBeLessThan(tolerance);
}

async function withTrainer<T>(
  config: TrainerConfig,
  body: (t: LocalTrainer) => Promise<T>,
): Promise<T> {
  const trainer = await LocalTrainer.create({ threads: 1, log: quietLog(), ...config });
  try {
    return await body(trainer);
  } finally {
    await trainer.release();
  }
}

/** quietLog drops log lines, so that test output shows only results. */
const quietLog = () =>
  createLogger('engine', new Writable({ write: (_chunk, _enc, done) => done() }));

const all = (n: number) => [...Array(n).keys()];

describe('LocalTrainer optimizer steps match a hand computation', () => {
  const data = syntheticDataset(8, [FEATURES], CLASSES, 11);

  test('plain SGD: w1 = w0 - lr * g', async () => {
    const model = logreg();
    const w0 = linearOf(model.params);
    await withTrainer(
      { model, optimizer: { kind: 'sgd', lr: 0.5 }, batchSize: 8, seed: 1 },
      async (t) => {
        await t.trainEpoch(data);
        const g = handGradient(w0, data, all(8));
        expectClose(
          linearOf(t.params),
          map(w0, (v, k, i) => v - 0.5 * g[k][i]),
        );
      },
    );
  });

  test('setLearningRate applies to the following steps', async () => {
    const model = logreg();
    const w0 = linearOf(model.params);
    await withTrainer(
      { model, optimizer: { kind: 'sgd', lr: 0.5 }, batchSize: 8, seed: 1 },
      async (t) => {
        await t.trainEpoch(data);
        t.setLearningRate(0.2);
        await t.trainEpoch(data);
        const w1 = map(w0, (v, k, i) => v - 0.5 * handGradient(w0, data, all(8))[k][i]);
        const g1 = handGradient(w1, data, all(8));
        expectClose(
          linearOf(t.params),
          map(w1, (v, k, i) => v - 0.2 * g1[k][i]),
        );
        expect(() => t.setLearningRate(0)).toThrow('lr: must be > 0, got 0');
      },
    );
  });

  test('SGD with momentum and weight decay over two steps', async () => {
    const model = logreg();
    const [lr, momentum, decay] = [0.3, 0.9, 0.1];
    const w0 = linearOf(model.params);
    await withTrainer(
      {
        model,
        optimizer: { kind: 'sgd', lr, momentum, weightDecay: decay },
        batchSize: 8,
        seed: 1,
      },
      async (t) => {
        await t.trainEpoch(data);
        await t.trainEpoch(data);
        const g1 = map(handGradient(w0, data, all(8)), (v, k, i) => v + decay * w0[k][i]);
        const w1 = map(w0, (v, k, i) => v - lr * g1[k][i]);
        const g2 = map(handGradient(w1, data, all(8)), (v, k, i) => v + decay * w1[k][i]);
        const v2 = map(g2, (v, k, i) => momentum * g1[k][i] + v);
        expectClose(
          linearOf(t.params),
          map(w1, (v, k, i) => v - lr * v2[k][i]),
        );
      },
    );
  });

  test('Adam with bias correction over two steps', async () => {
    const model = logreg();
    const [lr, b1, b2, eps] = [0.05, 0.8, 0.95, 1e-6];
    const w0 = linearOf(model.params);
    await withTrainer(
      {
        model,
        optimizer: { kind: 'adam', lr, beta1: b1, beta2: b2, epsilon: eps },
        batchSize: 8,
        seed: 1,
      },
      async (t) => {
        await t.trainEpoch(data);
        await t.trainEpoch(data);
        let w = w0;
        let m = map(w0, () => 0);
        let v = map(w0, () => 0);
        for (let step = 1; step <= 2; step++) {
          const g = handGradient(w, data, all(8));
          m = map(m, (x, k, i) => b1 * x + (1 - b1) * g[k][i]);
          v = map(v, (x, k, i) => b2 * x + (1 - b2) * g[k][i] ** 2);
          const mm = m;
          const vv = v;
          w = map(w, (x, k, i) => {
            const mHat = mm[k][i] / (1 - b1 ** step);
            const vHat = vv[k][i] / (1 - b2 ** step);
            return x - (lr * mHat) / (Math.sqrt(vHat) + eps);
          });
        }
        expectClose(linearOf(t.params), w);
      },
    );
  });

  test('a short last batch averages over its real rows only', async () => {
    const model = logreg();
    const w0 = linearOf(model.params);
    const five = syntheticDataset(5, [FEATURES], CLASSES, 12);
    await withTrainer(
      { model, optimizer: { kind: 'sgd', lr: 0.5 }, batchSize: 4, seed: 9 },
      async (t) => {
        await t.trainEpoch(five);
        // The first epoch shuffles with the trainer's seed.
        const order = Array.from(new SeededRandom(9).permutation(5));
        const g1 = handGradient(w0, five, order.slice(0, 4));
        const w1 = map(w0, (v, k, i) => v - 0.5 * g1[k][i]);
        const g2 = handGradient(w1, five, order.slice(4));
        expectClose(
          linearOf(t.params),
          map(w1, (v, k, i) => v - 0.5 * g2[k][i]),
        );
      },
    );
  });

  test('FedProx adds mu * (w - w_global) to the gradient', async () => {
    const model = logreg();
    const [lr, mu] = [0.4, 0.5];
    const w0 = linearOf(model.params);
    const globalParams = model.params.map((p) => ({
      ...p,
      data: p.data.map((v, i) => v + 0.1 * ((i % 3) - 1) + 0.05),
    }));
    const wg = linearOf(globalParams);
    const config = { model, optimizer: { kind: 'sgd', lr } as const, batchSize: 8, seed: 1 };
    const plain = await withTrainer(config, async (t) => {
      await t.trainEpoch(data, { globalParams });
      return linearOf(t.params);
    });
    await withTrainer({ ...config, proximalMu: mu }, async (t) => {
      await t.trainEpoch(data, { globalParams });
      const g = handGradient(w0, data, all(8));
      const expected = map(w0, (v, k, i) => v - lr * (g[k][i] + mu * (v - wg[k][i])));
      expectClose(linearOf(t.params), expected);
      // Against the same step without the term, the difference is exactly the proximal pull.
      expectClose(
        map(linearOf(t.params), (v, k, i) => v - plain[k][i]),
        map(w0, (v, k, i) => -lr * mu * (v - wg[k][i])),
      );
    });
  });

  test('setParams with resetOptimizer clears momentum; without it momentum carries over', async () => {
    const model = logreg();
    const optimizer = { kind: 'sgd', lr: 0.3, momentum: 0.9 } as const;
    const run = (reset: boolean) =>
      withTrainer({ model, optimizer, batchSize: 8, seed: 1 }, async (t) => {
        await t.trainEpoch(data);
        t.setParams(model.params, { resetOptimizer: reset });
        await t.trainEpoch(data);
        return linearOf(t.params);
      });
    const fresh = await withTrainer({ model, optimizer, batchSize: 8, seed: 1 }, async (t) => {
      await t.trainEpoch(data);
      return linearOf(t.params);
    });
    expectClose(await run(true), fresh);
    expect(Math.abs((await run(false)).w[0] - fresh.w[0])).toBeGreaterThan(1e-4);
  });
});

describe('LocalTrainer end to end', () => {
  test("one SGD step of the zoo CNN moves each weight by -lr times the loss's finite-difference slope", async () => {
    const data = syntheticDataset(32, [1, 16, 16], 4, 5);
    const model = buildZooModel('cnn', { inputShape: [1, 16, 16], numClasses: 4, seed: 3 });
    const lr = 1;
    await withTrainer(
      { model, optimizer: { kind: 'sgd', lr }, batchSize: 32, seed: 1, evalBatchSize: 32 },
      async (t) => {
        await t.trainEpoch(data);
        const stepped = t.params;
        const eps = 1e-3;
        const lossWith = async (param: number, index: number, delta: number) => {
          const shifted = model.params.map((p, i) => {
            const values = new Float32Array(p.data);
            if (i === param) values[index] += delta;
            return { ...p, data: values };
          });
          t.setParams(shifted);
          return (await t.evaluate(data)).loss;
        };
        const rng = new SeededRandom(8);
        for (let param = 0; param < model.params.length; param++) {
          // The most-moved weight of each tensor, so that no check is a trivial 0 = 0, plus
          // two random ones.
          const change = stepped[param].data.map((v, i) =>
            Math.abs(v - model.params[param].data[i]),
          );
          const largest = change.indexOf(Math.max(...change));
          const size = change.length;
          for (const index of [
            largest,
            Math.floor(rng.next() * size),
            Math.floor(rng.next() * size),
          ]) {
            const slope =
              ((await lossWith(param, index, eps)) - (await lossWith(param, index, -eps))) /
              (2 * eps);
            const moved = stepped[param].data[index] - model.params[param].data[index];
            expect({
              param: model.params[param].name,
              index,
              error: Math.abs(moved + lr * slope),
            }).toEqual({
              param: model.params[param].name,
              index,
              error: expect.closeTo(0, 2),
            });
          }
        }
      },
    );
  });

  test('an MLP learns a separable synthetic task, and the exported model predicts as the eval graph', async () => {
    const train = syntheticDataset(600, [2, 3], 3, 1);
    const test = syntheticDataset(200, [2, 3], 3, 2);
    const model = buildZooModel('mlp', { inputShape: [2, 3], numClasses: 3, seed: 5 });
    await withTrainer(
      { model, optimizer: { kind: 'adam', lr: 0.01 }, batchSize: 32, seed: 1, evalBatchSize: 64 },
      async (t) => {
        const before = await t.evaluate(test);
        for (let e = 0; e < 15; e++) await t.trainEpoch(train);
        const after = await t.evaluate(test);
        expect(after.loss).toBeLessThan(before.loss);
        expect(after.accuracy).toBeGreaterThan(0.85);
        expect(after.examples).toBe(200);

        const session = await ort.InferenceSession.create(t.exportInferenceModel());
        const out = await session.run({
          input: new ort.Tensor('float32', test.features, [test.count, 2, 3]),
        });
        const logits = out['logits'].data as Float32Array;
        let correct = 0;
        let loss = 0;
        for (let r = 0; r < test.count; r++) {
          const row = Array.from(logits.subarray(r * 3, r * 3 + 3));
          if (row.indexOf(Math.max(...row)) === test.labels[r]) correct++;
          const top = Math.max(...row);
          const logSum = top + Math.log(row.reduce((s, v) => s + Math.exp(v - top), 0));
          loss += logSum - row[test.labels[r]];
        }
        await session.release();
        expect(correct / test.count).toBe(after.accuracy);
        expect(Math.abs(loss / test.count - after.loss)).toBeLessThan(1e-5);
      },
    );
  });

  test('the same seed gives bit-identical parameters (CNN, default threads)', async () => {
    const data = syntheticDataset(96, [1, 16, 16], 4, 3);
    const runOnce = async (seed: number) => {
      const model = buildZooModel('cnn', { inputShape: [1, 16, 16], numClasses: 4, seed: 7 });
      const trainer = await LocalTrainer.create({
        model,
        optimizer: { kind: 'sgd', lr: 0.05, momentum: 0.9 },
        batchSize: 16,
        seed,
        log: quietLog(),
      });
      await trainer.trainEpoch(data);
      await trainer.trainEpoch(data);
      const params = trainer.params;
      await trainer.release();
      return params;
    };
    const [a, b, other] = [await runOnce(1), await runOnce(1), await runOnce(2)];
    expect(a.map((p) => Buffer.from(p.data.buffer).toString('hex'))).toEqual(
      b.map((p) => Buffer.from(p.data.buffer).toString('hex')),
    );
    expect(Array.from(other[0].data)).not.toEqual(Array.from(a[0].data));
  });

  test('a dataset whose samples do not fit the model is refused, naming source and shapes', async () => {
    const data = syntheticDataset(4, [5], CLASSES, 1);
    await withTrainer(
      { model: logreg(), optimizer: { kind: 'sgd', lr: 0.1 }, batchSize: 4, seed: 1 },
      async (t) => {
        await expect(t.trainEpoch(data)).rejects.toThrow(
          "synthetic-1: sample shape [5] does not fit the model's input shape [3]",
        );
      },
    );
  });

  test('asking for CUDA without it falls back to CPU and logs which provider runs', async () => {
    const lines: string[] = [];
    const sink = new PassThrough();
    sink.on('data', (chunk: Buffer) => lines.push(...chunk.toString().trim().split('\n')));
    await withTrainer(
      {
        model: logreg(),
        optimizer: { kind: 'sgd', lr: 0.1 },
        batchSize: 4,
        seed: 1,
        executionProvider: 'cuda',
        log: createLogger('engine', sink),
      },
      async (t) => {
        await t.trainEpoch(syntheticDataset(8, [FEATURES], CLASSES, 1));
        expect(t.executionProvider).toBe(cudaProviderInstalled() ? t.executionProvider : 'cpu');
      },
    );
    const selected = lines
      .map((l) => JSON.parse(l))
      .filter((l) => l.msg === 'engine execution provider selected');
    expect(selected).toHaveLength(1);
    expect(selected[0]).toMatchObject({ requested: 'cuda' });
    if (!cudaProviderInstalled()) expect(selected[0]).toMatchObject({ provider: 'cpu' });
  });
});
