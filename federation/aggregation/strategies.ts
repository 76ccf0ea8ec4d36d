/**
 * Server-side aggregation strategies. Every strategy here is mean-based: the aggregator
 * hands it the example-weighted mean of the round's deltas (local model minus global model),
 * and the strategy moves the global model.
 *
 * - fedavg: x += eta * mean(delta)             (eta = 1 gives plain FedAvg)
 * - fedavgm: m = momentum * m + mean(delta); x += eta * m
 * - fedprox: as fedavg on the server; the proximal term mu is trained on the sites
 * - fedadagrad, fedadam, fedyogi: the adaptive server optimizers of Reddi et al. (2021),
 *   "Adaptive Federated Optimization", Algorithm 2, with the pseudo-gradient
 *   Delta = mean(delta):
 *     m = beta1 * m + (1 - beta1) * Delta
 *     adagrad: v = v + Delta^2
 *     adam:    v = beta2 * v + (1 - beta2) * Delta^2
 *     yogi:    v = v - (1 - beta2) * Delta^2 * sign(v - Delta^2)
 *     x += eta * m / (sqrt(v) + tau)
 *   v starts at tau^2 (the paper asks v_{-1} >= tau^2); there is no bias correction, as in
 *   the paper.
 */

/** STRATEGY_NAMES lists the strategies a job may name in `spec.aggregation.strategy`. */
export const STRATEGY_NAMES = [
  'fedavg',
  'fedavgm',
  'fedprox',
  'fedadagrad',
  'fedadam',
  'fedyogi',
] as const;
export type StrategyName = (typeof STRATEGY_NAMES)[number];

/** StrategyParams are the numbers in `spec.aggregation.params`. */
export type StrategyParams = Record<string, number>;

/** ServerStrategy moves the global model by one round, keeping whatever state it needs. */
export interface ServerStrategy {
  readonly name: StrategyName;
  /** step applies the round's mean delta to the flat global model, in place. */
  step(global: Float32Array, meanDelta: Float64Array): void;
  /** state is what a checkpoint must keep to resume the strategy exactly. */
  state(): Record<string, Float32Array>;
  /** restore loads state written by `state()`. */
  restore(state: Record<string, Float32Array>): void;
}

const DEFAULTS: Record<StrategyName, StrategyParams> = {
  fedavg: { eta: 1 },
  fedprox: { eta: 1 },
  fedavgm: { eta: 1, momentum: 0.9 },
  fedadagrad: { eta: 0.01, beta1: 0.9, tau: 1e-3 },
  fedadam: { eta: 0.01, beta1: 0.9, beta2: 0.99, tau: 1e-3 },
  fedyogi: { eta: 0.01, beta1: 0.9, beta2: 0.99, tau: 1e-3 },
};

/** Allowed ranges of each parameter: [low, high, low inclusive?]. */
const RANGES: Record<string, [number, number, boolean]> = {
  eta: [0, Infinity, false],
  momentum: [0, 1, true],
  beta1: [0, 1, true],
  beta2: [0, 1, true],
  tau: [0, Infinity, false],
};

/**
 * resolveStrategyParams fills in defaults and checks every given parameter, with errors that
 * name `<field>.<param>`. Unknown parameters are errors: a typo must not be ignored silently.
 */
export function resolveStrategyParams(
  name: StrategyName,
  given: StrategyParams,
  field = 'spec.aggregation.params',
): StrategyParams {
  const defaults = DEFAULTS[name];
  const out: StrategyParams = { ...defaults };
  for (const [key, value] of Object.entries(given)) {
    if (!(key in defaults)) {
      throw new Error(
        `${field}.${key}: not a parameter of ${name}, expected one of ${Object.keys(defaults).join(', ')}`,
      );
    }
    const [lo, hi, loInclusive] = RANGES[key];
    const ok =
      typeof value === 'number' &&
      Number.isFinite(value) &&
      (loInclusive ? value >= lo : value > lo) &&
      value < hi;
    if (!ok) {
      throw new Error(
        `${field}.${key}: must be a number in ${loInclusive ? '[' : '('}${lo}, ${hi}), got ${String(value)}`,
      );
    }
    out[key] = value;
  }
  return out;
}

/** createStrategy builds a strategy for a model of `size` elements. */
export function createStrategy(
  name: StrategyName,
  given: StrategyParams,
  size: number,
): ServerStrategy {
  const p = resolveStrategyParams(name, given);
  switch (name) {
    case 'fedavg':
    case 'fedprox':
      return new FedAvg(name, p.eta);
    case 'fedavgm':
      return new FedAvgM(p.eta, p.momentum, size);
    case 'fedadagrad':
    case 'fedadam':
    case 'fedyogi':
      return new FedOpt(name, p, size);
  }
}

class FedAvg implements ServerStrategy {
  constructor(
    readonly name: StrategyName,
    private readonly eta: number,
  ) {}

  step(global: Float32Array, meanDelta: Float64Array): void {
    for (let i = 0; i < global.length; i++) global[i] += this.eta * meanDelta[i];
  }

  state(): Record<string, Float32Array> {
    return {};
  }

  restore(): void {}
}

class FedAvgM implements ServerStrategy {
  readonly name = 'fedavgm' as const;
  private readonly m: Float32Array;

  constructor(
    private readonly eta: number,
    private readonly momentum: number,
    size: number,
  ) {
    this.m = new Float32Array(size);
  }

  step(global: Float32Array, meanDelta: Float64Array): void {
    const { m, eta, momentum } = this;
    for (let i = 0; i < global.length; i++) {
      m[i] = momentum * m[i] + meanDelta[i];
      global[i] += eta * m[i];
    }
  }

  state(): Record<string, Float32Array> {
    return { m: this.m };
  }

  restore(state: Record<string, Float32Array>): void {
    restoreInto(this.m, state.m, 'm');
  }
}

class FedOpt implements ServerStrategy {
  private readonly m: Float32Array;
  private readonly v: Float32Array;

  constructor(
    readonly name: 'fedadagrad' | 'fedadam' | 'fedyogi',
    private readonly p: StrategyParams,
    size: number,
  ) {
    this.m = new Float32Array(size);
    this.v = new Float32Array(size).fill(p.tau * p.tau);
  }

  step(global: Float32Array, meanDelta: Float64Array): void {
    const { m, v } = this;
    const { eta, beta1, tau } = this.p;
    const beta2 = this.p.beta2 ?? 0;
    for (let i = 0; i < global.length; i++) {
      const d = meanDelta[i];
      const d2 = d * d;
      m[i] = beta1 * m[i] + (1 - beta1) * d;
      if (this.name === 'fedadagrad') v[i] = v[i] + d2;
      else if (this.name === 'fedadam') v[i] = beta2 * v[i] + (1 - beta2) * d2;
      else v[i] = v[i] - (1 - beta2) * d2 * Math.sign(v[i] - d2);
      global[i] += (eta * m[i]) / (Math.sqrt(v[i]) + tau);
    }
  }

  state(): Record<string, Float32Array> {
    return { m: this.m, v: this.v };
  }

  restore(state: Record<string, Float32Array>): void {
    restoreInto(this.m, state.m, 'm');
    restoreInto(this.v, state.v, 'v');
  }
}

function restoreInto(target: Float32Array, source: Float32Array | undefined, name: string): void {
  if (!source || source.length !== target.length) {
    throw new Error(
      `strategy state "${name}": ${source?.length ?? 'no'} elements, expected ${target.length}`,
    );
  }
  target.set(source);
}

/**
 * weightedMetrics averages the sites' metrics weighted by their example counts; a metric
 * that some site did not report is averaged over the sites that did.
 */
export function weightedMetrics(
  reports: ReadonlyArray<{ examples: number; metrics: Record<string, number> }>,
): Record<string, number> {
  const sums: Record<string, number> = {};
  const weights: Record<string, number> = {};
  let evalExamples = 0;
  for (const r of reports) {
    const evalWeight = r.metrics.eval_examples > 0 ? r.metrics.eval_examples : r.examples;
    if (r.metrics.eval_examples > 0) evalExamples += r.metrics.eval_examples;
    for (const [k, v] of Object.entries(r.metrics)) {
      if (!Number.isFinite(v) || k === 'eval_examples') continue;
      // eval_* metrics weigh by the examples they were measured on, the rest by training ones.
      const w = k.startsWith('eval_') ? evalWeight : r.examples;
      sums[k] = (sums[k] ?? 0) + w * v;
      weights[k] = (weights[k] ?? 0) + w;
    }
  }
  const out: Record<string, number> = {};
  for (const k of Object.keys(sums)) if (weights[k] > 0) out[k] = sums[k] / weights[k];
  if (evalExamples > 0) out.eval_examples = evalExamples;
  return out;
}
