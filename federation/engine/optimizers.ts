import { GraphBuilder } from './graph-builder';

/**
 * OptimizerConfig configures the local optimizer that runs inside the train-step graph.
 *
 * - `sgd`: `v = momentum * v + g; w -= lr * v` (PyTorch's form; momentum default 0).
 * - `adam`: Adam with bias correction (beta1 0.9, beta2 0.999, epsilon 1e-8 by default).
 *
 * `weightDecay` (default 0) adds `weightDecay * w` to the gradient (L2, as PyTorch's SGD and
 * Adam do). `lr` is the learning rate; it is fed at each step, so it may change between epochs.
 */
export type OptimizerConfig =
  | { kind: 'sgd'; lr: number; momentum?: number; weightDecay?: number }
  | {
      kind: 'adam';
      lr: number;
      beta1?: number;
      beta2?: number;
      epsilon?: number;
      weightDecay?: number;
    };

/** StateSlot is one optimizer state tensor: a graph input, its next value, zero at the start. */
export interface StateSlot {
  name: string;
  dims: number[];
  output: string;
}

/** OptimizerStep is what appendOptimizerStep added: new parameter values and state slots. */
export interface OptimizerStep {
  newParams: Map<string, string>;
  state: StateSlot[];
}

/** Proximal adds FedProx's term `mu/2 * ||w - w_global||^2`: gradient `mu * (w - w_global)`. */
export interface Proximal {
  mu: number;
  /** Parameter name -> graph input holding the global model's value of it. */
  globals: Map<string, string>;
}

/**
 * appendOptimizerStep adds one optimizer update of `params` from their gradients `grads`,
 * with the learning rate read from the scalar input `lr`.
 */
export function appendOptimizerStep(
  b: GraphBuilder,
  config: OptimizerConfig,
  params: { name: string; dims: number[] }[],
  grads: Map<string, string>,
  lr: string,
  proximal?: Proximal,
): OptimizerStep {
  validateOptimizer(config);
  const state: StateSlot[] = [];
  const addState = (hint: string, dims: number[]): string => {
    const name = b.fresh(hint);
    b.addInput(name, dims);
    state.push({ name, dims, output: '' });
    return name;
  };
  const setNext = (name: string, next: string) => {
    state.find((s) => s.name === name)!.output = next;
  };

  const effectiveGrad = (param: string): string => {
    let grad = grads.get(param)!;
    if (config.weightDecay) {
      grad = b.op('Add', [grad, b.op('Mul', [b.scalar(config.weightDecay), param])]);
    }
    if (proximal && proximal.mu > 0) {
      const drift = b.op('Sub', [param, proximal.globals.get(param)!]);
      grad = b.op('Add', [grad, b.op('Mul', [b.scalar(proximal.mu), drift])]);
    }
    return grad;
  };

  const newParams = new Map<string, string>();
  if (config.kind === 'sgd') {
    const momentum = config.momentum ?? 0;
    for (const { name, dims } of params) {
      let direction = effectiveGrad(name);
      if (momentum > 0) {
        const velocity = addState(`${name}.momentum`, dims);
        direction = b.op('Add', [b.op('Mul', [b.scalar(momentum), velocity]), direction]);
        setNext(velocity, direction);
      }
      newParams.set(name, b.op('Sub', [name, b.op('Mul', [lr, direction])]));
    }
    return { newParams, state };
  }

  const beta1 = config.beta1 ?? 0.9;
  const beta2 = config.beta2 ?? 0.999;
  const epsilon = config.epsilon ?? 1e-8;
  // The step counter is state too, so that bias correction continues across epochs.
  const step = addState('adam.step', []);
  const nextStep = b.op('Add', [step, b.scalar(1)]);
  setNext(step, nextStep);
  const one = b.scalar(1);
  const correction1 = b.op('Sub', [one, b.op('Pow', [b.scalar(beta1), nextStep])]);
  const correction2 = b.op('Sub', [one, b.op('Pow', [b.scalar(beta2), nextStep])]);
  const stepSize = b.op('Div', [lr, correction1]);
  const rootCorrection2 = b.op('Sqrt', [correction2]);
  for (const { name, dims } of params) {
    const grad = effectiveGrad(name);
    const m = addState(`${name}.adam_m`, dims);
    const v = addState(`${name}.adam_v`, dims);
    const nextM = b.op('Add', [
      b.op('Mul', [b.scalar(beta1), m]),
      b.op('Mul', [b.scalar(1 - beta1), grad]),
    ]);
    const nextV = b.op('Add', [
      b.op('Mul', [b.scalar(beta2), v]),
      b.op('Mul', [b.scalar(1 - beta2), b.op('Mul', [grad, grad])]),
    ]);
    setNext(m, nextM);
    setNext(v, nextV);
    const denominator = b.op('Add', [
      b.op('Div', [b.op('Sqrt', [nextV]), rootCorrection2]),
      b.scalar(epsilon),
    ]);
    const update = b.op('Mul', [stepSize, b.op('Div', [nextM, denominator])]);
    newParams.set(name, b.op('Sub', [name, update]));
  }
  return { newParams, state };
}

/** validateOptimizer throws for a setting out of range, naming the field and the value. */
export function validateOptimizer(config: OptimizerConfig): void {
  const check = (
    field: string,
    value: number | undefined,
    ok: (v: number) => boolean,
    expected: string,
  ) => {
    if (value !== undefined && (!Number.isFinite(value) || !ok(value))) {
      throw new Error(`optimizer.${field}: must be ${expected}, got ${value}`);
    }
  };
  if (config.kind !== 'sgd' && config.kind !== 'adam') {
    throw new Error(
      `optimizer.kind: must be sgd or adam, got ${String((config as { kind: unknown }).kind)}`,
    );
  }
  check('lr', config.lr, (v) => v > 0, '> 0');
  check('weightDecay', config.weightDecay, (v) => v >= 0, '>= 0');
  if (config.kind === 'sgd') {
    check('momentum', config.momentum, (v) => v >= 0 && v < 1, 'in [0, 1)');
  } else {
    check('beta1', config.beta1, (v) => v >= 0 && v < 1, 'in [0, 1)');
    check('beta2', config.beta2, (v) => v >= 0 && v < 1, 'in [0, 1)');
    check('epsilon', config.epsilon, (v) => v > 0, '> 0');
  }
}
