import { onnx } from 'onnx-proto';

/**
 * Readers for decoded ONNX protos. Models decoded from bytes carry 64-bit integers as `Long`
 * objects, models built in memory carry plain numbers; these helpers accept both.
 */

/** toNumber converts a proto integer (number or Long) to a JavaScript number. */
export function toNumber(value: number | { toNumber(): number } | null | undefined): number {
  if (value === null || value === undefined) return 0;
  return typeof value === 'number' ? value : value.toNumber();
}

/** nodeLabel names a node for error messages: its name, or its position when it has none. */
export function nodeLabel(node: onnx.INodeProto, index?: number): string {
  const name = node.name || (index === undefined ? node.output?.[0] : `#${index}`);
  return `node "${name}" (op ${node.opType})`;
}

function findAttr(node: onnx.INodeProto, name: string): onnx.IAttributeProto | undefined {
  return node.attribute?.find((a) => a.name === name);
}

/** attrInt reads an integer attribute, or `fallback` when the node does not set it. */
export function attrInt(node: onnx.INodeProto, name: string, fallback: number): number {
  const attr = findAttr(node, name);
  return attr ? toNumber(attr.i) : fallback;
}

/** attrInts reads an integer-list attribute, or `fallback` when the node does not set it. */
export function attrInts(node: onnx.INodeProto, name: string, fallback: number[]): number[] {
  const attr = findAttr(node, name);
  return attr ? (attr.ints ?? []).map(toNumber) : fallback;
}

/** attrFloat reads a float attribute, or `fallback` when the node does not set it. */
export function attrFloat(node: onnx.INodeProto, name: string, fallback: number): number {
  const attr = findAttr(node, name);
  return attr ? (attr.f ?? 0) : fallback;
}

/** attrString reads a string attribute, or `fallback` when the node does not set it. */
export function attrString(node: onnx.INodeProto, name: string, fallback: string): string {
  const attr = findAttr(node, name);
  return attr?.s ? new TextDecoder().decode(attr.s) : fallback;
}

/** attrTensor reads a tensor attribute (the `value` of a Constant node). */
export function attrTensor(node: onnx.INodeProto, name: string): onnx.ITensorProto | undefined {
  return findAttr(node, name)?.t ?? undefined;
}

/** tensorDims returns a tensor proto's dims as numbers. */
export function tensorDims(tensor: onnx.ITensorProto): number[] {
  return (tensor.dims ?? []).map(toNumber);
}

/**
 * tensorValues decodes the numbers of a float, double, int32 or int64 tensor proto, whether
 * stored as raw little-endian bytes or in the typed repeated fields.
 */
export function tensorValues(tensor: onnx.ITensorProto): number[] {
  const Type = onnx.TensorProto.DataType;
  const raw = tensor.rawData;
  if (raw && raw.length > 0) {
    const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    switch (tensor.dataType) {
      case Type.FLOAT:
        return Array.from({ length: raw.length / 4 }, (_, i) => view.getFloat32(i * 4, true));
      case Type.DOUBLE:
        return Array.from({ length: raw.length / 8 }, (_, i) => view.getFloat64(i * 8, true));
      case Type.INT32:
        return Array.from({ length: raw.length / 4 }, (_, i) => view.getInt32(i * 4, true));
      case Type.INT64:
        return Array.from({ length: raw.length / 8 }, (_, i) =>
          Number(view.getBigInt64(i * 8, true)),
        );
      default:
        throw new Error(`tensor "${tensor.name}": unsupported data type ${tensor.dataType}`);
    }
  }
  switch (tensor.dataType) {
    case Type.FLOAT:
      return [...(tensor.floatData ?? [])];
    case Type.DOUBLE:
      return [...(tensor.doubleData ?? [])];
    case Type.INT32:
      return [...(tensor.int32Data ?? [])];
    case Type.INT64:
      return (tensor.int64Data ?? []).map(toNumber);
    default:
      throw new Error(`tensor "${tensor.name}": unsupported data type ${tensor.dataType}`);
  }
}

/** valueDims reads the static dims of a graph input or output; symbolic dims read as -1. */
export function valueDims(info: onnx.IValueInfoProto): number[] {
  const dims = info.type?.tensorType?.shape?.dim ?? [];
  return dims.map((d) =>
    d.dimValue !== undefined && d.dimValue !== null && !d.dimParam ? toNumber(d.dimValue) : -1,
  );
}
