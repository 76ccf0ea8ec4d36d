import { NamedTensor, elementCount } from '../engine/tensor';
import { TensorSpec } from '../protocol/wire';

/**
 * ModelLayout lays a model's tensors end to end in one flat float32 vector, in the model's
 * order, so that aggregation runs as a few long loops instead of one loop per tensor.
 */
export class ModelLayout {
  /** Element offset of each tensor in the flat vector. */
  readonly offsets: number[];
  /** Total number of elements. */
  readonly size: number;

  constructor(readonly specs: readonly TensorSpec[]) {
    this.offsets = [];
    let size = 0;
    for (const s of specs) {
      this.offsets.push(size);
      size += elementCount(s.shape);
    }
    this.size = size;
  }

  /** ofTensors describes the layout of these tensors. */
  static ofTensors(tensors: readonly NamedTensor[]): ModelLayout {
    return new ModelLayout(
      tensors.map((t) => ({ name: t.name, dtype: 'f32', shape: [...t.dims] })),
    );
  }

  /** flatten copies tensors (which must match the layout) into one new vector. */
  flatten(tensors: readonly NamedTensor[]): Float32Array {
    const flat = new Float32Array(this.size);
    this.specs.forEach((s, i) => {
      const t = tensors[i];
      if (!t || t.name !== s.name || t.data.length !== elementCount(s.shape)) {
        throw new Error(
          `tensor ${i}: got "${t?.name}" of ${t?.data.length} elements, expected "${s.name}" of ${elementCount(s.shape)}`,
        );
      }
      flat.set(t.data, this.offsets[i]);
    });
    return flat;
  }

  /** views returns NamedTensors whose data are views into `flat` (no copy). */
  views(flat: Float32Array): NamedTensor[] {
    return this.specs.map((s, i) => ({
      name: s.name,
      dims: [...s.shape],
      data: flat.subarray(this.offsets[i], this.offsets[i] + elementCount(s.shape)),
    }));
  }

  /** bytes is the size of the model as float32. */
  get bytes(): number {
    return this.size * 4;
  }
}
