import * as ort from 'onnxruntime-node';
import { appendGradients } from '../../../federation/engine/autodiff';
import {
  DataType,
  FloatType,
  GraphBuilder,
  encodeModel,
} from '../../../federation/engine/graph-builder';
import { SeededRandom } from '../../../federation/random';
import {
  GraphFacts,
  inferShapes,
  recordConstants,
} from '../../../federation/engine/shape-inference';

/** CheckInput is one input of a gradient-check graph. */
export interface CheckInput {
  name: string;
  dims: number[];
  /** Fixed values; random in [low, high) otherwise. */
  values?: number[];
  /** Integer input (indices): int64, never differentiated. */
  int64?: boolean;
  low?: number;
  high?: number;
}

/** GradientCase is a small forward graph whose gradients are checked against finite differences. */
export interface GradientCase {
  inputs: CheckInput[];
  /** Appends the forward nodes and returns the output value to differentiate. */
  build(b: GraphBuilder): string;
  /** Inputs to differentiate with respect to; default every float input. */
  wrt?: string[];
  floatType?: FloatType;
  /** Finite-difference step; default 1e-5 in float64, 1e-2 in float32. */
  eps?: number;
  tolerance?: number;
}

/** GradientComparison is the analytic and numeric gradient of one input. */
export interface GradientComparison {
  name: string;
  analytic: number[];
  numeric: number[];
  maxError: number;
}

/**
 * checkGradients builds the case's forward graph with loss `sum(output * R)` for a fixed random
 * R, differentiates it with the engine's autodiff, runs both in onnxruntime, and compares the
 * analytic gradients with central finite differences of the forward graph.
 */
export async function checkGradients(
  testCase: GradientCase,
  seed = 7,
): Promise<GradientComparison[]> {
  const floatType = testCase.floatType ?? DataType.DOUBLE;
  const double = floatType === DataType.DOUBLE;
  const rng = new SeededRandom(seed);
  const b = new GraphBuilder(floatType);
  const facts: GraphFacts = { shapes: new Map(), constants: new Map() };
  const values = new Map<string, number[]>();
  for (const input of testCase.inputs) {
    b.addInput(input.name, input.dims, input.int64 ? DataType.INT64 : floatType);
    facts.shapes.set(input.name, input.dims);
    const count = input.dims.reduce((p, d) => p * d, 1);
    values.set(
      input.name,
      input.values ??
        Array.from({ length: count }, () => rng.uniform(input.low ?? -1, input.high ?? 1)),
    );
  }
  const output = testCase.build(b);
  recordConstants(b.initializers, facts);
  inferShapes(b.nodes, facts);
  const outputDims = facts.shapes.get(output)!;
  const probeCount = outputDims.reduce((p, d) => p * d, 1);
  const probe = b.initializer(
    'probe',
    outputDims,
    Array.from({ length: probeCount }, () => rng.uniform(-1, 1)),
  );
  b.node('ReduceSum', [b.op('Mul', [output, probe])], { keepdims: 0 }, { outputs: ['loss'] });
  recordConstants(b.initializers, facts);
  inferShapes(b.nodes.slice(-2), facts);
  b.addOutput('loss', []);
  const forwardBytes = encodeModel(b.toModel('forward'));

  const wrt = testCase.wrt ?? testCase.inputs.filter((i) => !i.int64).map((i) => i.name);
  const grads = appendGradients(b, [...b.nodes], facts, 'loss', wrt);
  for (const name of wrt) b.addOutput(grads.get(name)!, facts.shapes.get(name)!);
  const gradientBytes = encodeModel(b.toModel('gradient'));

  const options: ort.InferenceSession.SessionOptions = {
    logSeverityLevel: 3,
    intraOpNumThreads: 1,
  };
  const forward = await ort.InferenceSession.create(forwardBytes, options);
  const gradient = await ort.InferenceSession.create(gradientBytes, options);
  const feeds = (overrides: Map<string, number[]> = new Map()) => {
    const result: Record<string, ort.Tensor> = {};
    for (const input of testCase.inputs) {
      const data = overrides.get(input.name) ?? values.get(input.name)!;
      result[input.name] = input.int64
        ? new ort.Tensor('int64', BigInt64Array.from(data.map(BigInt)), input.dims)
        : double
          ? new ort.Tensor('float64', Float64Array.from(data), input.dims)
          : new ort.Tensor('float32', Float32Array.from(data), input.dims);
    }
    return result;
  };

  const analyticOut = await gradient.run(feeds());
  const eps = testCase.eps ?? (double ? 1e-5 : 1e-2);
  const lossAt = async (name: string, perturbed: number[]) =>
    Number((await forward.run(feeds(new Map([[name, perturbed]]))))['loss'].data[0]);
  const comparisons: GradientComparison[] = [];
  for (const name of wrt) {
    const analytic = Array.from(analyticOut[grads.get(name)!].data as Float64Array, Number);
    const base = values.get(name)!;
    const numeric: number[] = [];
    for (let i = 0; i < base.length; i++) {
      const plus = [...base];
      const minus = [...base];
      plus[i] += eps;
      minus[i] -= eps;
      numeric.push(((await lossAt(name, plus)) - (await lossAt(name, minus))) / (2 * eps));
    }
    const maxError = Math.max(
      ...numeric.map((n, i) => Math.abs(n - analytic[i]) / (1 + Math.abs(n))),
    );
    comparisons.push({ name, analytic, numeric, maxError });
  }
  await forward.release();
  await gradient.release();
  return comparisons;
}

/** expectGradientsMatch runs checkGradients and asserts every gradient within tolerance. */
export async function expectGradientsMatch(testCase: GradientCase): Promise<void> {
  const double = (testCase.floatType ?? DataType.DOUBLE) === DataType.DOUBLE;
  const tolerance = testCase.tolerance ?? (double ? 1e-6 : 2e-3);
  for (const comparison of await checkGradients(testCase)) {
    // A thrown message names the operand, so a wrong rule points at the input it broke.
    if (!(comparison.maxError <= tolerance)) {
      throw new Error(
        `gradient of "${comparison.name}" differs from finite differences by ${comparison.maxError} (tolerance ${tolerance})\nanalytic ${comparison.analytic.slice(0, 8).join(', ')}\nnumeric  ${comparison.numeric.slice(0, 8).join(', ')}`,
      );
    }
  }
}
