import { onnx } from 'onnx-proto';
import {
  attrInt,
  attrInts,
  attrString,
  attrTensor,
  nodeLabel,
  tensorDims,
  tensorValues,
} from './onnx-read';

/**
 * GraphFacts are what the engine knows statically about the values of a graph: the dims of
 * every value and the numbers held by small integer constants (shapes, axes), which some
 * operators read as inputs.
 */
export interface GraphFacts {
  shapes: Map<string, number[]>;
  constants: Map<string, number[]>;
}

type ShapeRule = (node: onnx.INodeProto, inputs: number[][], facts: GraphFacts) => number[][];

const sameAsFirst: ShapeRule = (_node, inputs) => [inputs[0]];
const broadcastAll: ShapeRule = (node, inputs) => [broadcastShapes(inputs, node)];

/**
 * broadcastShapes returns the numpy-broadcast shape of several shapes, or throws naming the
 * node when they are incompatible.
 */
export function broadcastShapes(shapes: number[][], node?: onnx.INodeProto): number[] {
  const rank = Math.max(...shapes.map((s) => s.length));
  const out = new Array<number>(rank).fill(1);
  for (const shape of shapes) {
    const offset = rank - shape.length;
    shape.forEach((d, i) => {
      const o = out[offset + i];
      if (d === o || d === 1) return;
      if (o !== 1) {
        const where = node ? `${nodeLabel(node)}: ` : '';
        throw new Error(
          `${where}shapes [${shapes.map((s) => s.join(',')).join('] and [')}] do not broadcast`,
        );
      }
      out[offset + i] = d;
    });
  }
  return out;
}

/** normalizeAxis maps a possibly negative axis into [0, rank). */
export function normalizeAxis(axis: number, rank: number): number {
  return axis < 0 ? axis + rank : axis;
}

/**
 * poolGeometry reads the spatial attributes Conv, MaxPool and AveragePool share, filling
 * ONNX's defaults, and rejects auto_pad modes other than explicit pads.
 */
export function poolGeometry(
  node: onnx.INodeProto,
  kernel: number[],
): { kernel: number[]; strides: number[]; pads: number[]; dilations: number[]; ceil: boolean } {
  const spatial = kernel.length;
  const autoPad = attrString(node, 'auto_pad', 'NOTSET');
  if (autoPad !== 'NOTSET' && autoPad !== 'VALID') {
    throw new Error(
      `${nodeLabel(node)}: auto_pad ${autoPad} is not supported, expected NOTSET or VALID`,
    );
  }
  return {
    kernel,
    strides: attrInts(node, 'strides', new Array<number>(spatial).fill(1)),
    pads: attrInts(node, 'pads', new Array<number>(2 * spatial).fill(0)),
    dilations: attrInts(node, 'dilations', new Array<number>(spatial).fill(1)),
    ceil: attrInt(node, 'ceil_mode', 0) === 1,
  };
}

/** spatialOutput computes the output spatial dims of a sliding-window operator. */
export function spatialOutput(
  input: number[],
  geometry: ReturnType<typeof poolGeometry>,
): number[] {
  const { kernel, strides, pads, dilations, ceil } = geometry;
  return input.map((size, i) => {
    const span = (kernel[i] - 1) * dilations[i] + 1;
    const room = size + pads[i] + pads[i + input.length] - span;
    return (ceil ? Math.ceil(room / strides[i]) : Math.floor(room / strides[i])) + 1;
  });
}

/** reduceAxes reads the axes of a ReduceSum/ReduceMean node, from its input or attribute. */
export function reduceAxes(node: onnx.INodeProto, rank: number, facts: GraphFacts): number[] {
  let axes: number[] | undefined;
  const axesInput = node.input?.[1];
  if (axesInput) {
    axes = facts.constants.get(axesInput);
    if (!axes) throw new Error(`${nodeLabel(node)}: axes input "${axesInput}" must be a constant`);
  } else {
    axes = attrInts(node, 'axes', []);
  }
  if (axes.length === 0) {
    return attrInt(node, 'noop_with_empty_axes', 0) ? [] : [...Array(rank).keys()];
  }
  return axes.map((a) => normalizeAxis(a, rank)).sort((a, b) => a - b);
}

/** reshapeTarget resolves a Reshape node's target shape (0 copies, -1 infers). */
export function reshapeTarget(node: onnx.INodeProto, input: number[], facts: GraphFacts): number[] {
  const spec = facts.constants.get(node.input?.[1] ?? '');
  if (!spec) {
    throw new Error(`${nodeLabel(node)}: shape input "${node.input?.[1]}" must be a constant`);
  }
  const allowZero = attrInt(node, 'allowzero', 0) === 1;
  const out = spec.map((d, i) => (d === 0 && !allowZero ? input[i] : d));
  const total = input.reduce((a, b) => a * b, 1);
  const known = out.filter((d) => d !== -1).reduce((a, b) => a * b, 1);
  const target = out.map((d) => (d === -1 ? total / known : d));
  if (!target.every((d) => Number.isInteger(d)) || target.reduce((a, b) => a * b, 1) !== total) {
    throw new Error(
      `${nodeLabel(node)}: cannot reshape [${input.join(', ')}] to [${spec.join(', ')}]`,
    );
  }
  return target;
}

const shapeRules: Record<string, ShapeRule> = {
  Identity: sameAsFirst,
  Dropout: sameAsFirst,
  Relu: sameAsFirst,
  Sigmoid: sameAsFirst,
  Tanh: sameAsFirst,
  Neg: sameAsFirst,
  Exp: sameAsFirst,
  Log: sameAsFirst,
  Sqrt: sameAsFirst,
  Softmax: sameAsFirst,
  LogSoftmax: sameAsFirst,
  Cast: sameAsFirst,
  Add: broadcastAll,
  Sub: broadcastAll,
  Mul: broadcastAll,
  Div: broadcastAll,
  Pow: broadcastAll,
  Equal: broadcastAll,
  Greater: broadcastAll,
  Where: broadcastAll,
  Gemm: (node, [a, b]) => {
    const m = attrInt(node, 'transA', 0) ? a[1] : a[0];
    const n = attrInt(node, 'transB', 0) ? b[0] : b[1];
    return [[m, n]];
  },
  MatMul: (node, [a, b]) => {
    // TODO: MatMul with a 1-D operand (vector products) is refused; Linear layers export as rank >= 2.
    if (a.length < 2 || b.length < 2) {
      throw new Error(
        `${nodeLabel(node)}: operands of rank < 2 are not supported, got [${a}] and [${b}]`,
      );
    }
    const batch = broadcastShapes([a.slice(0, -2), b.slice(0, -2)], node);
    return [[...batch, a[a.length - 2], b[b.length - 1]]];
  },
  Conv: (node, [x, w]) => {
    const geometry = poolGeometry(node, attrInts(node, 'kernel_shape', w.slice(2)));
    return [[x[0], w[0], ...spatialOutput(x.slice(2), geometry)]];
  },
  MaxPool: (node, [x]) => {
    const geometry = poolGeometry(node, attrInts(node, 'kernel_shape', []));
    const y = [x[0], x[1], ...spatialOutput(x.slice(2), geometry)];
    return [y, y];
  },
  AveragePool: (node, [x]) => {
    const geometry = poolGeometry(node, attrInts(node, 'kernel_shape', []));
    return [[x[0], x[1], ...spatialOutput(x.slice(2), geometry)]];
  },
  Flatten: (node, [x]) => {
    const axis = normalizeAxis(attrInt(node, 'axis', 1), x.length);
    const prod = (dims: number[]) => dims.reduce((a, b) => a * b, 1);
    return [[prod(x.slice(0, axis)), prod(x.slice(axis))]];
  },
  Reshape: (node, [x], facts) => [reshapeTarget(node, x, facts)],
  Transpose: (node, [x]) => {
    const perm = attrInts(node, 'perm', [...x.keys()].reverse());
    return [perm.map((p) => x[p])];
  },
  Concat: (node, inputs) => {
    const axis = normalizeAxis(attrInt(node, 'axis', 0), inputs[0].length);
    const out = [...inputs[0]];
    out[axis] = inputs.reduce((sum, s) => sum + s[axis], 0);
    return [out];
  },
  Gather: (node, [data, indices]) => {
    const axis = normalizeAxis(attrInt(node, 'axis', 0), data.length);
    return [[...data.slice(0, axis), ...indices, ...data.slice(axis + 1)]];
  },
  GatherElements: (_node, [, indices]) => [indices],
  ReduceSum: reduceShape,
  ReduceMean: reduceShape,
  ReduceMax: reduceShape,
  Shape: (_node, [x]) => [[x.length]],
  Unsqueeze: (node, [x], facts) => {
    const axes = axesOf(node, facts);
    const rank = x.length + axes.length;
    const inserted = axes.map((a) => normalizeAxis(a, rank));
    const out: number[] = [];
    let next = 0;
    for (let i = 0; i < rank; i++) out.push(inserted.includes(i) ? 1 : x[next++]);
    return [out];
  },
  Squeeze: (node, [x], facts) => {
    const given = axesOf(node, facts).map((a) => normalizeAxis(a, x.length));
    const axes = given.length > 0 ? given : x.flatMap((d, i) => (d === 1 ? [i] : []));
    return [x.filter((_, i) => !axes.includes(i))];
  },
  ArgMax: (node, [x]) => {
    const axis = normalizeAxis(attrInt(node, 'axis', 0), x.length);
    const keep = attrInt(node, 'keepdims', 1) === 1;
    return [keep ? x.map((d, i) => (i === axis ? 1 : d)) : x.filter((_, i) => i !== axis)];
  },
};

/** axesOf reads the axes of Unsqueeze/Squeeze: an input from opset 13, an attribute before. */
function axesOf(node: onnx.INodeProto, facts: GraphFacts): number[] {
  const input = node.input?.[1];
  if (!input) return attrInts(node, 'axes', []);
  const axes = facts.constants.get(input);
  if (!axes) throw new Error(`${nodeLabel(node)}: axes input "${input}" must be a constant`);
  return axes;
}

type FoldRule = (
  node: onnx.INodeProto,
  values: (number[] | undefined)[],
  inputs: number[][],
) => number[] | undefined;

/**
 * Folding rules compute integer values known before run time: with static shapes, the
 * Shape -> Gather -> Unsqueeze -> Concat chains exporters write for `x.view(x.size(0), -1)`
 * produce constants a Reshape can read.
 */
const foldRules: Record<string, FoldRule> = {
  Shape: (node, _values, [x]) => {
    const start = normalizeAxis(attrInt(node, 'start', 0), x.length);
    const end = node.attribute?.some((a) => a.name === 'end')
      ? normalizeAxis(attrInt(node, 'end', x.length), x.length)
      : x.length;
    return x.slice(start, end);
  },
  Identity: (_node, [x]) => x,
  Cast: (_node, [x]) => x,
  Unsqueeze: (_node, [x]) => x,
  Squeeze: (_node, [x]) => x,
  Gather: (node, [data, indices], [dataDims]) => {
    if (!data || !indices || dataDims.length !== 1 || attrInt(node, 'axis', 0) !== 0)
      return undefined;
    return indices.map((i) => data[i < 0 ? i + data.length : i]);
  },
  Concat: (_node, values) => (values.every((v) => v !== undefined) ? values.flat() : undefined),
};

function reduceShape(node: onnx.INodeProto, [x]: number[][], facts: GraphFacts): number[][] {
  const axes = reduceAxes(node, x.length, facts);
  const keep = attrInt(node, 'keepdims', 1) === 1;
  return [
    keep ? x.map((d, i) => (axes.includes(i) ? 1 : d)) : x.filter((_, i) => !axes.includes(i)),
  ];
}

/** hasShapeRule tells whether inferShapes knows an operator. */
export function hasShapeRule(opType: string): boolean {
  return opType in shapeRules || opType === 'Constant';
}

/**
 * inferShapes walks nodes in order and records the static dims of every output in
 * `facts.shapes`; the dims of graph inputs and initializers must be there already. Constant
 * nodes also record their values in `facts.constants`.
 */
export function inferShapes(nodes: onnx.INodeProto[], facts: GraphFacts): void {
  nodes.forEach((node, index) => {
    const opType = node.opType ?? '';
    if (opType === 'Constant') {
      const value = attrTensor(node, 'value');
      if (!value)
        throw new Error(`${nodeLabel(node, index)}: only the "value" attribute is supported`);
      facts.shapes.set(node.output![0], tensorDims(value));
      facts.constants.set(node.output![0], tensorValues(value));
      return;
    }
    const rule = shapeRules[opType];
    if (!rule) throw new Error(`${nodeLabel(node, index)}: no shape rule`);
    const inputs = (node.input ?? [])
      .filter((name) => name !== '')
      .map((name) => {
        const dims = facts.shapes.get(name);
        if (!dims) throw new Error(`${nodeLabel(node, index)}: input "${name}" has no known shape`);
        return dims;
      });
    const outputs = rule(node, inputs, facts);
    (node.output ?? []).forEach((name, i) => {
      if (name && outputs[i]) facts.shapes.set(name, outputs[i]);
    });
    const fold = foldRules[opType];
    if (fold) {
      const values = (node.input ?? []).filter((n) => n !== '').map((n) => facts.constants.get(n));
      const folded = fold(node, values, inputs);
      if (folded) facts.constants.set(node.output![0], folded);
    }
  });
}

/** recordConstants adds the dims (and integer values) of initializers to the facts. */
export function recordConstants(initializers: onnx.ITensorProto[], facts: GraphFacts): void {
  for (const init of initializers) {
    const name = init.name ?? '';
    if (facts.shapes.has(name)) continue;
    facts.shapes.set(name, tensorDims(init));
    if (
      init.dataType === onnx.TensorProto.DataType.INT64 ||
      init.dataType === onnx.TensorProto.DataType.INT32
    ) {
      facts.constants.set(name, tensorValues(init));
    }
  }
}
