import { onnx } from 'onnx-proto';

/** ONNX_OPSET is the default-domain opset of every graph the engine emits (onnxruntime 1.30 runs it). */
export const ONNX_OPSET = 17;

/** ONNX_IR_VERSION is the IR version that pairs with ONNX_OPSET. */
export const ONNX_IR_VERSION = 8;

export const DataType = onnx.TensorProto.DataType;

/** FloatType is the element type the engine computes in: float32 for training, float64 for checks. */
export type FloatType = onnx.TensorProto.DataType.FLOAT | onnx.TensorProto.DataType.DOUBLE;

/** AttributeValue is what a node attribute may hold in graphs the engine builds. */
export type AttributeValue = number | string | number[] | onnx.ITensorProto;

/** Attributes are node attributes by name; integers and floats are told apart by `floatAttrs`. */
export type Attributes = Record<string, AttributeValue>;

/**
 * GraphBuilder accumulates the nodes, initializers, inputs and outputs of one ONNX graph and
 * hands out fresh value names, so that graph transformations (autodiff, optimizers, losses)
 * can append to a graph without clashing with names already in it.
 */
export class GraphBuilder {
  readonly nodes: onnx.INodeProto[] = [];
  readonly initializers: onnx.ITensorProto[] = [];
  readonly inputs: onnx.IValueInfoProto[] = [];
  readonly outputs: onnx.IValueInfoProto[] = [];
  /** Every value name in use, so that fresh names never collide with the forward graph's. */
  private readonly taken = new Set<string>();
  private counter = 0;

  constructor(readonly floatType: FloatType = DataType.FLOAT) {}

  /** reserve marks names as used (names of an existing graph being extended). */
  reserve(...names: string[]): void {
    for (const name of names) this.taken.add(name);
  }

  /** fresh returns a value name that is not yet used, derived from `hint`. */
  fresh(hint: string): string {
    let name = hint;
    while (this.taken.has(name)) name = `${hint}_${++this.counter}`;
    this.taken.add(name);
    return name;
  }

  /** node appends one node and returns its output names (one fresh name per output by default). */
  node(
    opType: string,
    inputs: string[],
    attrs: Attributes = {},
    options: { outputs?: number | string[]; name?: string; floatAttrs?: string[] } = {},
  ): string[] {
    const outputs = Array.isArray(options.outputs)
      ? options.outputs
      : Array.from({ length: options.outputs ?? 1 }, () => this.fresh(`${opType}_out`));
    this.reserve(...outputs);
    this.nodes.push({
      name: options.name ?? this.fresh(opType),
      opType,
      input: inputs,
      output: outputs,
      attribute: Object.entries(attrs).map(([key, value]) =>
        makeAttribute(key, value, options.floatAttrs?.includes(key) ?? false),
      ),
    });
    return outputs;
  }

  /** op appends a single-output node and returns its output name. */
  op(opType: string, inputs: string[], attrs: Attributes = {}, floatAttrs: string[] = []): string {
    return this.node(opType, inputs, attrs, { floatAttrs })[0];
  }

  /** scalar adds a constant of the builder's float type (rank 0 unless dims are given). */
  scalar(value: number, dims: number[] = []): string {
    return this.initializer(
      this.fresh('const'),
      dims,
      new Array<number>(dims.reduce((a, b) => a * b, 1)).fill(value),
    );
  }

  /** initializer adds a float constant of the builder's float type and returns its name. */
  initializer(name: string, dims: number[], values: ArrayLike<number>): string {
    this.reserve(name);
    this.initializers.push(floatTensor(name, dims, values, this.floatType));
    return name;
  }

  /** int64s adds a 1-D int64 constant (shapes, axes, sizes) and returns its name. */
  int64s(values: number[], hint = 'ints'): string {
    const name = this.fresh(hint);
    this.initializers.push({
      name,
      dims: [values.length],
      dataType: DataType.INT64,
      int64Data: values,
    });
    return name;
  }

  /** addInput declares a graph input of the builder's float type (or `elemType`). */
  addInput(name: string, dims: (number | string)[], elemType: number = this.floatType): void {
    this.reserve(name);
    this.inputs.push(valueInfo(name, dims, elemType));
  }

  /** addOutput declares a graph output. */
  addOutput(name: string, dims: (number | string)[], elemType: number = this.floatType): void {
    this.outputs.push(valueInfo(name, dims, elemType));
  }

  /** toModel wraps the graph into a model proto at the engine's opset. */
  toModel(graphName: string, opset = ONNX_OPSET): onnx.IModelProto {
    return {
      irVersion: ONNX_IR_VERSION,
      producerName: 'flotilla',
      opsetImport: [{ domain: '', version: opset }],
      graph: {
        name: graphName,
        node: this.nodes,
        initializer: this.initializers,
        input: this.inputs,
        output: this.outputs,
      },
    };
  }
}

/** encodeModel serialises a model proto to the bytes onnxruntime loads. */
export function encodeModel(model: onnx.IModelProto): Uint8Array {
  return onnx.ModelProto.encode(onnx.ModelProto.create(model)).finish();
}

/** floatTensor makes a float32 or float64 tensor proto, values stored as raw little-endian bytes. */
export function floatTensor(
  name: string,
  dims: number[],
  values: ArrayLike<number>,
  floatType: FloatType = DataType.FLOAT,
): onnx.ITensorProto {
  const typed =
    floatType === DataType.DOUBLE ? Float64Array.from(values) : Float32Array.from(values);
  return {
    name,
    dims,
    dataType: floatType,
    rawData: new Uint8Array(typed.buffer, typed.byteOffset, typed.byteLength),
  };
}

/** valueInfo describes a tensor-typed graph input or output; string dims are symbolic. */
export function valueInfo(
  name: string,
  dims: (number | string)[],
  elemType: number,
): onnx.IValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType,
        shape: {
          dim: dims.map((d) => (typeof d === 'string' ? { dimParam: d } : { dimValue: d })),
        },
      },
    },
  };
}

function makeAttribute(
  name: string,
  value: AttributeValue,
  isFloat: boolean,
): onnx.IAttributeProto {
  const Type = onnx.AttributeProto.AttributeType;
  if (typeof value === 'string') {
    return { name, type: Type.STRING, s: new TextEncoder().encode(value) };
  }
  if (typeof value === 'number') {
    return isFloat ? { name, type: Type.FLOAT, f: value } : { name, type: Type.INT, i: value };
  }
  if (Array.isArray(value)) {
    return isFloat
      ? { name, type: Type.FLOATS, floats: value }
      : { name, type: Type.INTS, ints: value };
  }
  return { name, type: Type.TENSOR, t: value };
}
