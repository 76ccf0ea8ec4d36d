import { onnx } from 'onnx-proto';
import { GraphBuilder, floatTensor } from './graph-builder';
import { attrFloat, attrInt, attrInts, nodeLabel } from './onnx-read';
import {
  GraphFacts,
  normalizeAxis,
  poolGeometry,
  reduceAxes,
  spatialOutput,
} from './shape-inference';

/**
 * GradientContext is what a gradient rule sees of one forward node: the builder to append
 * backward nodes to, the gradient of each output (undefined where no gradient flows back),
 * static shapes, and which inputs need a gradient.
 */
export interface GradientContext {
  b: GraphBuilder;
  node: onnx.INodeProto;
  inputs: string[];
  outputs: string[];
  dY: (string | undefined)[];
  needs: boolean[];
  shape(name: string): number[];
  facts: GraphFacts;
}

/**
 * A GradientRule returns, for each input of the node, the name of the loss gradient with
 * respect to that input (same shape as the input), or undefined where none is needed.
 */
export type GradientRule = (ctx: GradientContext) => (string | undefined)[];

/** zeros appends a tensor of zeros of the given shape, built at run time (no large constant). */
export function zeros(b: GraphBuilder, dims: number[]): string {
  return b.op('ConstantOfShape', [b.int64s(dims, 'shape')], {
    value: floatTensor('', [1], [0], b.floatType),
  });
}

/**
 * unbroadcast sums a gradient of a broadcast result back to the shape of one operand: over
 * the leading axes the operand lacks and over the axes where the operand has size 1.
 */
export function unbroadcast(
  b: GraphBuilder,
  grad: string,
  gradDims: number[],
  target: number[],
): string {
  const extra = gradDims.length - target.length;
  const axes: number[] = [];
  gradDims.forEach((d, i) => {
    if (i < extra || (target[i - extra] === 1 && d !== 1)) axes.push(i);
  });
  if (axes.length === 0 && extra === 0) return grad;
  const summed =
    axes.length === 0 ? grad : b.op('ReduceSum', [grad, b.int64s(axes, 'axes')], { keepdims: 1 });
  return extra === 0 ? summed : b.op('Reshape', [summed, b.int64s(target, 'shape')]);
}

function reshapeTo(ctx: GradientContext, grad: string, dims: number[]): string {
  return ctx.b.op('Reshape', [grad, ctx.b.int64s(dims, 'shape')]);
}

/** Gradient of an elementwise binary operator: scale dY per operand, then unbroadcast. */
function binary(
  scale: (ctx: GradientContext, dY: string) => [string | undefined, string | undefined],
): GradientRule {
  return (ctx) => {
    const [a, bIn] = ctx.inputs;
    const y = ctx.outputs[0];
    const [ga, gb] = scale(ctx, ctx.dY[0]!);
    const yDims = ctx.shape(y);
    return [
      ctx.needs[0] && ga ? unbroadcast(ctx.b, ga, yDims, ctx.shape(a)) : undefined,
      ctx.needs[1] && gb ? unbroadcast(ctx.b, gb, yDims, ctx.shape(bIn)) : undefined,
    ];
  };
}

/** Gradient of a unary elementwise operator: dX = dY * f'(x, y). */
function unary(derivative: (ctx: GradientContext, dY: string) => string): GradientRule {
  return (ctx) => [derivative(ctx, ctx.dY[0]!)];
}

const gemm: GradientRule = (ctx) => {
  const { b, node } = ctx;
  const [a, w, c] = ctx.inputs;
  const dY = ctx.dY[0]!;
  const alpha = attrFloat(node, 'alpha', 1);
  const beta = attrFloat(node, 'beta', 1);
  const transA = attrInt(node, 'transA', 0);
  const transB = attrInt(node, 'transB', 0);
  const gemmOp = (x: string, y: string, tA: number, tB: number) =>
    b.op('Gemm', [x, y], { alpha, transA: tA, transB: tB }, ['alpha']);
  // With A' = op(A), B' = op(B): dA' = dY·B'ᵀ and dB' = A'ᵀ·dY; undo the transposes per case.
  const dA = !ctx.needs[0]
    ? undefined
    : transA
      ? gemmOp(w, dY, transB, 1)
      : gemmOp(dY, w, 0, 1 - transB);
  const dB = !ctx.needs[1]
    ? undefined
    : transB
      ? gemmOp(dY, a, 1, transA)
      : gemmOp(a, dY, 1 - transA, 0);
  let dC: string | undefined;
  if (c && ctx.needs[2]) {
    dC = unbroadcast(b, dY, ctx.shape(ctx.outputs[0]), ctx.shape(c));
    if (beta !== 1) dC = b.op('Mul', [dC, b.scalar(beta)]);
  }
  return [dA, dB, dC];
};

function swapLast(b: GraphBuilder, x: string, rank: number): string {
  const perm = [...Array(rank).keys()];
  [perm[rank - 2], perm[rank - 1]] = [perm[rank - 1], perm[rank - 2]];
  return b.op('Transpose', [x], { perm });
}

const matMul: GradientRule = (ctx) => {
  const { b } = ctx;
  const [a, w] = ctx.inputs;
  const dY = ctx.dY[0]!;
  const yDims = ctx.shape(ctx.outputs[0]);
  const aDims = ctx.shape(a);
  const wDims = ctx.shape(w);
  const dA = ctx.needs[0]
    ? unbroadcast(
        b,
        b.op('MatMul', [dY, swapLast(b, w, wDims.length)]),
        [...yDims.slice(0, -1), aDims[aDims.length - 1]],
        aDims,
      )
    : undefined;
  const dB = ctx.needs[1]
    ? unbroadcast(
        b,
        b.op('MatMul', [swapLast(b, a, aDims.length), dY]),
        [...yDims.slice(0, -2), wDims[wDims.length - 2], yDims[yDims.length - 1]],
        wDims,
      )
    : undefined;
  return [dA, dB];
};

const conv: GradientRule = (ctx) => {
  const { b, node } = ctx;
  const [x, w, bias] = ctx.inputs;
  const dY = ctx.dY[0]!;
  // TODO: grouped and depthwise convolutions have no gradient rule; models using them (e.g.
  // MobileNet exports) are refused at graph build time.
  if (attrInt(node, 'group', 1) !== 1) {
    throw new Error(
      `${nodeLabel(node)}: no gradient rule for group=${attrInt(node, 'group', 1)}, expected 1`,
    );
  }
  const xDims = ctx.shape(x);
  const wDims = ctx.shape(w);
  const yDims = ctx.shape(ctx.outputs[0]);
  const spatial = xDims.length - 2;
  const geometry = poolGeometry(node, attrInts(node, 'kernel_shape', wDims.slice(2)));
  const { kernel, strides, pads, dilations } = geometry;
  const grads: (string | undefined)[] = [undefined, undefined, undefined];

  if (ctx.needs[0]) {
    // ConvTranspose maps dY back onto x; output_padding restores the rows the forward stride
    // skipped at the end.
    const outputPadding = xDims.slice(2).map((size, i) => {
      const span = (kernel[i] - 1) * dilations[i] + 1;
      return size - (strides[i] * (yDims[i + 2] - 1) + span - pads[i] - pads[i + spatial]);
    });
    grads[0] = b.op('ConvTranspose', [dY, w], {
      kernel_shape: kernel,
      strides,
      pads,
      dilations,
      output_padding: outputPadding,
    });
  }

  if (ctx.needs[1]) {
    // dW[m,c] = sum over n of x[n,c] correlated with dY[n,m]: a Conv where the batch axis
    // plays the channel axis, and stride and dilation trade places.
    const swap = [1, 0, ...Array.from({ length: spatial }, (_, i) => i + 2)];
    const xT = b.op('Transpose', [x], { perm: swap });
    const dYT = b.op('Transpose', [dY], { perm: swap });
    let dW = b.op('Conv', [xT, dYT], {
      kernel_shape: yDims.slice(2),
      strides: dilations,
      dilations: strides,
      pads,
    });
    const reach = xDims.slice(2).map((size, i) => {
      const room = size + pads[i] + pads[i + spatial] - ((yDims[i + 2] - 1) * strides[i] + 1);
      return Math.floor(room / dilations[i]) + 1;
    });
    if (reach.some((r, i) => r !== kernel[i])) {
      // The end rows the forward pass never reached (input not divisible by stride) are cut.
      const axes = kernel.map((_, i) => i + 2);
      dW = b.op('Slice', [
        dW,
        b.int64s(
          kernel.map(() => 0),
          'starts',
        ),
        b.int64s(kernel, 'ends'),
        b.int64s(axes, 'axes'),
      ]);
    }
    grads[1] = b.op('Transpose', [dW], { perm: swap });
  }

  if (bias && ctx.needs[2]) {
    const axes = [0, ...Array.from({ length: spatial }, (_, i) => i + 2)];
    grads[2] = b.op('ReduceSum', [dY, b.int64s(axes, 'axes')], { keepdims: 0 });
  }
  return grads;
};

const maxPool: GradientRule = (ctx) => {
  const { b, node } = ctx;
  const x = ctx.inputs[0];
  const xDims = ctx.shape(x);
  if (attrInt(node, 'storage_order', 0) !== 0) {
    throw new Error(`${nodeLabel(node)}: no gradient rule for storage_order=1, expected 0`);
  }
  // The forward node is asked for its argmax indices (flat positions in x); the gradient is
  // dY scattered, with addition, onto those positions.
  const outputs = node.output!;
  if (outputs.length < 2 || !outputs[1]) {
    outputs[1] = b.fresh(`${outputs[0]}_indices`);
  }
  const total = xDims.reduce((p, d) => p * d, 1);
  const flatShape = b.int64s([-1], 'shape');
  const scattered = b.op(
    'ScatterElements',
    [
      zeros(b, [total]),
      b.op('Reshape', [outputs[1], flatShape]),
      b.op('Reshape', [ctx.dY[0]!, flatShape]),
    ],
    { axis: 0, reduction: 'add' },
  );
  return [reshapeTo(ctx, scattered, xDims)];
};

const averagePool: GradientRule = (ctx) => {
  const { b, node } = ctx;
  const x = ctx.inputs[0];
  const xDims = ctx.shape(x);
  const geometry = poolGeometry(node, attrInts(node, 'kernel_shape', []));
  // TODO: ceil_mode=1 average pooling is refused; its last windows would need their own counts.
  if (geometry.ceil) {
    throw new Error(`${nodeLabel(node)}: no gradient rule for ceil_mode=1, expected 0`);
  }
  const yDims = ctx.shape(ctx.outputs[0]);
  const spatialIn = xDims.slice(2);
  const spatialOut = spatialOutput(spatialIn, geometry);
  const includePad = attrInt(node, 'count_include_pad', 0) === 1;
  // Each output averaged over its own count of cells; the count differs at padded borders.
  const counts = windowCounts(spatialIn, spatialOut, geometry, includePad);
  const scaled = b.op('Div', [
    ctx.dY[0]!,
    b.initializer(b.fresh('pool_counts'), [1, 1, ...spatialOut], counts),
  ]);
  const channels = xDims[0] * xDims[1];
  const stacked = reshapeTo(ctx, scaled, [channels, 1, ...yDims.slice(2)]);
  const kernelSize = geometry.kernel.reduce((p, k) => p * k, 1);
  const ones = b.initializer(
    b.fresh('pool_ones'),
    [1, 1, ...geometry.kernel],
    new Array<number>(kernelSize).fill(1),
  );
  const outputPadding = spatialIn.map(
    (size, i) =>
      size -
      (geometry.strides[i] * (spatialOut[i] - 1) +
        geometry.kernel[i] -
        geometry.pads[i] -
        geometry.pads[i + spatialIn.length]),
  );
  const spread = b.op('ConvTranspose', [stacked, ones], {
    kernel_shape: geometry.kernel,
    strides: geometry.strides,
    pads: geometry.pads,
    output_padding: outputPadding,
  });
  return [reshapeTo(ctx, spread, xDims)];
};

/** windowCounts returns, per output cell, how many input cells its pooling window averages. */
function windowCounts(
  spatialIn: number[],
  spatialOut: number[],
  geometry: ReturnType<typeof poolGeometry>,
  includePad: boolean,
): number[] {
  const perAxis = spatialIn.map((size, i) =>
    Array.from({ length: spatialOut[i] }, (_, o) => {
      const start = o * geometry.strides[i] - geometry.pads[i];
      const end = start + geometry.kernel[i];
      if (includePad) return Math.min(end, size + geometry.pads[i + spatialIn.length]) - start;
      return Math.min(end, size) - Math.max(start, 0);
    }),
  );
  let counts = [1];
  for (const axis of perAxis) counts = counts.flatMap((c) => axis.map((n) => c * n));
  return counts;
}

const softmax: GradientRule = (ctx) => {
  const { b, node } = ctx;
  const y = ctx.outputs[0];
  const dY = ctx.dY[0]!;
  const axis = normalizeAxis(attrInt(node, 'axis', -1), ctx.shape(y).length);
  const dot = b.op('ReduceSum', [b.op('Mul', [dY, y]), b.int64s([axis], 'axes')], { keepdims: 1 });
  return [b.op('Mul', [y, b.op('Sub', [dY, dot])])];
};

const logSoftmax: GradientRule = (ctx) => {
  const { b, node } = ctx;
  const y = ctx.outputs[0];
  const dY = ctx.dY[0]!;
  const axis = normalizeAxis(attrInt(node, 'axis', -1), ctx.shape(y).length);
  const total = b.op('ReduceSum', [dY, b.int64s([axis], 'axes')], { keepdims: 1 });
  return [b.op('Sub', [dY, b.op('Mul', [b.op('Exp', [y]), total])])];
};

function reduce(mean: boolean): GradientRule {
  return (ctx) => {
    const { b, node } = ctx;
    const xDims = ctx.shape(ctx.inputs[0]);
    const axes = reduceAxes(node, xDims.length, ctx.facts);
    const kept = xDims.map((d, i) => (axes.includes(i) ? 1 : d));
    let grad = ctx.dY[0]!;
    if (attrInt(node, 'keepdims', 1) !== 1) grad = reshapeTo(ctx, grad, kept);
    if (mean) {
      const count = axes.reduce((p, a) => p * xDims[a], 1);
      grad = b.op('Mul', [grad, b.scalar(1 / count)]);
    }
    return [b.op('Expand', [grad, b.int64s(xDims, 'shape')])];
  };
}

const concat: GradientRule = (ctx) => {
  const { b, node } = ctx;
  const shapes = ctx.inputs.map((name) => ctx.shape(name));
  const axis = normalizeAxis(attrInt(node, 'axis', 0), shapes[0].length);
  const parts = b.node(
    'Split',
    [
      ctx.dY[0]!,
      b.int64s(
        shapes.map((s) => s[axis]),
        'split',
      ),
    ],
    { axis },
    { outputs: shapes.length },
  );
  return parts.map((part, i) => (ctx.needs[i] ? part : undefined));
};

const gather: GradientRule = (ctx) => {
  const { b, node } = ctx;
  const [data, indices] = ctx.inputs;
  // TODO: Gather along axes other than 0 is refused; embeddings, the use that matters, gather rows.
  if (attrInt(node, 'axis', 0) !== 0) {
    throw new Error(
      `${nodeLabel(node)}: no gradient rule for axis=${attrInt(node, 'axis', 0)}, expected 0`,
    );
  }
  // Rows picked several times receive the sum of their gradients.
  const dataDims = ctx.shape(data);
  const indexDims = ctx.shape(indices);
  const asInt64 = b.op('Cast', [indices], { to: onnx.TensorProto.DataType.INT64 });
  const positions = reshapeTo(ctx, asInt64, [...indexDims, 1]);
  return [
    b.op('ScatterND', [zeros(b, dataDims), positions, ctx.dY[0]!], { reduction: 'add' }),
    undefined,
  ];
};

const reshapeBack: GradientRule = (ctx) => [reshapeTo(ctx, ctx.dY[0]!, ctx.shape(ctx.inputs[0]))];

/** gradientRules maps each differentiable ONNX operator to its gradient rule. */
export const gradientRules: Record<string, GradientRule> = {
  Identity: (ctx) => [ctx.dY[0]],
  // TODO: Dropout runs as identity in the train step (onnxruntime's inference mode), so a
  // user model that relies on dropout trains without that regularisation.
  Dropout: (ctx) => [ctx.dY[0]],
  Add: binary((_ctx, dY) => [dY, dY]),
  Sub: binary((ctx, dY) => [dY, ctx.needs[1] ? ctx.b.op('Neg', [dY]) : undefined]),
  Mul: binary((ctx, dY) => [
    ctx.needs[0] ? ctx.b.op('Mul', [dY, ctx.inputs[1]]) : undefined,
    ctx.needs[1] ? ctx.b.op('Mul', [dY, ctx.inputs[0]]) : undefined,
  ]),
  Div: binary((ctx, dY) => {
    const { b } = ctx;
    const [, divisor] = ctx.inputs;
    return [
      ctx.needs[0] ? b.op('Div', [dY, divisor]) : undefined,
      ctx.needs[1]
        ? b.op('Neg', [b.op('Div', [b.op('Mul', [dY, ctx.outputs[0]]), divisor])])
        : undefined,
    ];
  }),
  Neg: unary((ctx, dY) => ctx.b.op('Neg', [dY])),
  // Reads the output (y > 0 exactly where x > 0), so that the input need not outlive the
  // forward pass and onnxruntime can still fuse Conv+Relu.
  Relu: unary((ctx, dY) => {
    const zero = ctx.b.scalar(0);
    return ctx.b.op('Where', [ctx.b.op('Greater', [ctx.outputs[0], zero]), dY, zero]);
  }),
  Sigmoid: unary((ctx, dY) => {
    const { b } = ctx;
    const y = ctx.outputs[0];
    return b.op('Mul', [dY, b.op('Mul', [y, b.op('Sub', [b.scalar(1), y])])]);
  }),
  Tanh: unary((ctx, dY) => {
    const { b } = ctx;
    const y = ctx.outputs[0];
    return b.op('Mul', [dY, b.op('Sub', [b.scalar(1), b.op('Mul', [y, y])])]);
  }),
  Exp: unary((ctx, dY) => ctx.b.op('Mul', [dY, ctx.outputs[0]])),
  Log: unary((ctx, dY) => ctx.b.op('Div', [dY, ctx.inputs[0]])),
  Sqrt: unary((ctx, dY) =>
    ctx.b.op('Div', [dY, ctx.b.op('Mul', [ctx.b.scalar(2), ctx.outputs[0]])]),
  ),
  Softmax: softmax,
  LogSoftmax: logSoftmax,
  Gemm: gemm,
  MatMul: matMul,
  Conv: conv,
  MaxPool: maxPool,
  AveragePool: averagePool,
  Flatten: reshapeBack,
  Reshape: (ctx) => [reshapeBack(ctx)[0], undefined],
  Transpose: (ctx) => {
    const rank = ctx.shape(ctx.inputs[0]).length;
    const perm = attrInts(ctx.node, 'perm', [...Array(rank).keys()].reverse());
    const inverse = new Array<number>(rank);
    perm.forEach((p, i) => (inverse[p] = i));
    return [ctx.b.op('Transpose', [ctx.dY[0]!], { perm: inverse })];
  },
  Unsqueeze: (ctx) => [reshapeBack(ctx)[0], undefined],
  Squeeze: (ctx) => [reshapeBack(ctx)[0], undefined],
  Concat: concat,
  Gather: gather,
  ReduceSum: (ctx) => [reduce(false)(ctx)[0], undefined],
  ReduceMean: (ctx) => [reduce(true)(ctx)[0], undefined],
};
