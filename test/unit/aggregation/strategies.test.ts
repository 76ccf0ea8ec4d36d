import { MeanAccumulator } from '../../../federation/aggregation/mean-accumulator';
import { StagingPool } from '../../../federation/aggregation/staging-pool';
import {
  createStrategy,
  resolveStrategyParams,
  weightedMetrics,
} from '../../../federation/aggregation/strategies';

const f = Math.fround;

describe('mean accumulator', () => {
  test('weights each update by its example count', () => {
    const acc = new MeanAccumulator(2);
    acc.fold(Float32Array.of(1, 2), 1);
    acc.fold(Float32Array.of(4, -4), 3);
    expect(Array.from(acc.takeMean())).toEqual([(1 + 12) / 4, (2 - 12) / 4]);
  });

  test('refuses a non-positive weight and a wrong size without changing the sum', () => {
    const acc = new MeanAccumulator(2);
    acc.fold(Float32Array.of(1, 1), 2);
    const before = acc.snapshot();
    expect(() => acc.fold(Float32Array.of(1, 1), 0)).toThrow('update weight 0');
    expect(() => acc.fold(Float32Array.of(1), 1)).toThrow('update of 1 elements');
    expect(acc.snapshot()).toEqual(before);
  });
});

describe('staging pool', () => {
  test('lends at most `slots` buffers; the next borrower waits for a release', async () => {
    const pool = new StagingPool(4, 2);
    const a = await pool.acquire();
    await pool.acquire();
    let third: Float32Array | undefined;
    const waiting = pool.acquire().then((b) => (third = b));
    await Promise.resolve();
    expect(third).toBeUndefined();
    pool.release(a);
    await waiting;
    expect(third).toBe(a);
  });
});

describe('server strategies', () => {
  test('fedavg adds the mean delta; eta scales it', () => {
    const x = Float32Array.of(1, 2);
    createStrategy('fedavg', {}, 2).step(x, Float64Array.of(0.5, -1));
    expect(Array.from(x)).toEqual([1.5, 1]);
    const y = Float32Array.of(1, 2);
    createStrategy('fedavg', { eta: 0.5 }, 2).step(y, Float64Array.of(0.5, -1));
    expect(Array.from(y)).toEqual([1.25, 1.5]);
  });

  test('fedavgm accumulates momentum across rounds', () => {
    const x = Float32Array.of(0);
    const s = createStrategy('fedavgm', { momentum: 0.5 }, 1);
    s.step(x, Float64Array.of(1)); // m = 1, x = 1
    s.step(x, Float64Array.of(1)); // m = 1.5, x = 2.5
    expect(Array.from(x)).toEqual([2.5]);
    expect(Array.from(s.state().m)).toEqual([1.5]);
  });

  test('fedadam, fedyogi and fedadagrad follow Reddi et al. (2021), v starting at tau^2', () => {
    const p = { eta: 0.1, beta1: 0.9, beta2: 0.99, tau: 1e-3 };
    const d = 0.2;
    const m = f((1 - p.beta1) * d);
    const v0 = f(p.tau * p.tau);
    const expectedV = {
      fedadam: f(p.beta2 * v0 + (1 - p.beta2) * d * d),
      fedyogi: f(v0 - (1 - p.beta2) * d * d * Math.sign(v0 - d * d)),
      fedadagrad: f(v0 + d * d),
    };
    for (const name of ['fedadam', 'fedyogi', 'fedadagrad'] as const) {
      const params = name === 'fedadagrad' ? { eta: p.eta, beta1: p.beta1, tau: p.tau } : p;
      const s = createStrategy(name, params, 1);
      const x = Float32Array.of(1);
      s.step(x, Float64Array.of(d));
      const v = expectedV[name];
      expect(s.state().m[0]).toBe(m);
      expect(s.state().v[0]).toBe(v);
      expect(x[0]).toBe(f(1 + (p.eta * m) / (Math.sqrt(v) + p.tau)));
    }
  });

  test('state restores exactly, so a resumed server optimizer continues where it was', () => {
    const a = createStrategy('fedadam', {}, 3);
    const x = Float32Array.of(1, 2, 3);
    a.step(x, Float64Array.of(0.1, -0.2, 0.3));
    const b = createStrategy('fedadam', {}, 3);
    b.restore(a.state());
    const xa = new Float32Array(x);
    const xb = new Float32Array(x);
    a.step(xa, Float64Array.of(0.05, 0.05, 0.05));
    b.step(xb, Float64Array.of(0.05, 0.05, 0.05));
    expect(Array.from(xb)).toEqual(Array.from(xa));
  });

  test('parameters are checked with errors that name the field', () => {
    expect(() => resolveStrategyParams('fedadam', { beta3: 1 })).toThrow(
      'spec.aggregation.params.beta3: not a parameter of fedadam, expected one of eta, beta1, beta2, tau',
    );
    expect(() => resolveStrategyParams('fedyogi', { tau: 0 })).toThrow(
      'spec.aggregation.params.tau: must be a number in (0, Infinity), got 0',
    );
    expect(resolveStrategyParams('fedavgm', {})).toEqual({ eta: 1, momentum: 0.9 });
  });
});

describe('federated metrics', () => {
  test('are weighted by examples; eval metrics by the examples they were measured on', () => {
    const m = weightedMetrics([
      { examples: 100, metrics: { train_loss: 1, eval_accuracy: 0.5, eval_examples: 10 } },
      { examples: 300, metrics: { train_loss: 2, eval_accuracy: 1, eval_examples: 30 } },
    ]);
    expect(m).toEqual({ train_loss: 1.75, eval_accuracy: 0.875, eval_examples: 40 });
  });
});
