/**
 * A named float32 tensor: the unit in which model parameters, optimizer state and updates
 * move between the engine, the wire protocol and the aggregator.
 *
 * Contract: `data.length` equals the product of `dims` (1 for a scalar, `dims = []`), and
 * values are stored row-major, as ONNX and onnxruntime store them.
 */
export interface NamedTensor {
  name: string;
  dims: number[];
  data: Float32Array;
}

/** elementCount returns the number of elements a tensor of these dims holds. */
export function elementCount(dims: readonly number[]): number {
  return dims.reduce((n, d) => n * d, 1);
}

/** cloneTensor returns a deep copy, so that later writes to either side stay apart. */
export function cloneTensor(t: NamedTensor): NamedTensor {
  return { name: t.name, dims: [...t.dims], data: new Float32Array(t.data) };
}
