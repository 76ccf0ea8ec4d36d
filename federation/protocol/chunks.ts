import * as os from 'os';
import { NamedTensor, elementCount } from '../engine/tensor';
import { DEFAULT_CHUNK_BYTES, DTYPE_BYTES, TensorChunk, TensorSpec } from './wire';

// Chunks carry raw float32 in the host's byte order; the wire says little-endian, so a
// big-endian host would have to swap. Every platform Flotilla ships on is little-endian.
if (os.endianness() !== 'LE') {
  throw new Error(
    `flotilla wire format: host is ${os.endianness()}, only little-endian is supported`,
  );
}

/** ChunkError says why a chunk (or the sequence of chunks) is not acceptable. */
export class ChunkError extends Error {
  override readonly name = 'ChunkError';
}

/** specsOf describes tensors as they appear on the wire. */
export function specsOf(tensors: readonly NamedTensor[]): TensorSpec[] {
  return tensors.map((t) => ({ name: t.name, dtype: 'f32', shape: [...t.dims] }));
}

/**
 * tensorChunks cuts tensors into chunks of at most `chunkBytes` bytes of payload, tensor by
 * tensor, by rising offset. The payload is a view on the tensor's memory, not a copy: the
 * tensors must not change until the chunks are sent.
 */
export function* tensorChunks(
  tensors: readonly NamedTensor[],
  chunkBytes: number = DEFAULT_CHUNK_BYTES,
): Generator<TensorChunk> {
  const perChunk = Math.max(1, Math.floor(chunkBytes / 4));
  for (const t of tensors) {
    const shape = [...t.dims];
    // A tensor with no elements still sends one empty chunk so the receiver sees its name.
    if (t.data.length === 0) {
      yield { name: t.name, dtype: 'f32', shape, offset: 0, data: Buffer.alloc(0) };
      continue;
    }
    for (let offset = 0; offset < t.data.length; offset += perChunk) {
      const end = Math.min(t.data.length, offset + perChunk);
      const view = t.data.subarray(offset, end);
      yield {
        name: t.name,
        dtype: 'f32',
        shape,
        offset,
        data: Buffer.from(view.buffer, view.byteOffset, view.byteLength),
      };
    }
  }
}

/** float32View reads a chunk's payload as float32, copying only when it is misaligned. */
export function float32View(data: Uint8Array): Float32Array {
  if (data.byteOffset % 4 === 0)
    return new Float32Array(data.buffer, data.byteOffset, data.length / 4);
  const copy = new Uint8Array(data.length);
  copy.set(data);
  return new Float32Array(copy.buffer);
}

/** AcceptedChunk is a chunk that passed ChunkSequence's checks, with its place in the model. */
export interface AcceptedChunk {
  tensorIndex: number;
  /** Element offset within the tensor. */
  offset: number;
  /** Element offset within the whole model, tensors laid end to end in order. */
  flatOffset: number;
  /** Number of elements in the chunk. */
  count: number;
  /** The chunk's elements (a view when the payload is aligned, else a copy). */
  readonly values: Float32Array;
  /**
   * copyInto copies the chunk's raw bytes into a flat model vector at `flatOffset` and returns
   * the view of what it wrote: one copy, whatever the payload's alignment.
   */
  copyInto(target: Float32Array): Float32Array;
}

/**
 * ChunkSequence checks a stream of chunks against the tensors it must describe: the same
 * names, dtypes and shapes in the same order, each tensor's chunks contiguous by rising
 * offset, no chunk larger than the limit. Because chunks must come in exactly that order,
 * "every element received exactly once" reduces to "the cursor reached the end".
 */
export class ChunkSequence {
  private tensorIndex = 0;
  private offset = 0;
  private flatBase = 0;
  private readonly sizes: number[];

  /** bytesReceived counts the payload bytes accepted so far. */
  bytesReceived = 0;

  constructor(
    private readonly specs: readonly TensorSpec[],
    private readonly maxChunkBytes: number = 4 * DEFAULT_CHUNK_BYTES,
  ) {
    this.sizes = specs.map((s) => elementCount(s.shape));
  }

  /** accept checks one chunk and returns its values and place; it throws ChunkError. */
  accept(chunk: TensorChunk): AcceptedChunk {
    this.skipEmptyTensorsBefore(chunk.name);
    const spec = this.specs[this.tensorIndex];
    if (spec === undefined) {
      throw new ChunkError(
        `chunk of tensor "${chunk.name}": all ${this.specs.length} tensors are already complete`,
      );
    }
    if (chunk.name !== spec.name) {
      throw new ChunkError(
        `chunk names tensor "${chunk.name}": expected "${spec.name}" (tensor ${this.tensorIndex} of the model)`,
      );
    }
    const size = DTYPE_BYTES[chunk.dtype];
    if (size === undefined || chunk.dtype !== spec.dtype) {
      throw new ChunkError(
        `tensor "${chunk.name}": dtype "${chunk.dtype}", expected "${spec.dtype}"`,
      );
    }
    if (!sameShape(chunk.shape, spec.shape)) {
      throw new ChunkError(
        `tensor "${chunk.name}": shape [${chunk.shape.join(',')}], expected [${spec.shape.join(',')}]`,
      );
    }
    if (chunk.offset !== this.offset) {
      throw new ChunkError(
        `tensor "${chunk.name}": chunk at offset ${chunk.offset}, expected offset ${this.offset}`,
      );
    }
    if (chunk.data.length % size !== 0) {
      throw new ChunkError(
        `tensor "${chunk.name}": chunk of ${chunk.data.length} bytes is not a multiple of ${size}`,
      );
    }
    if (chunk.data.length > this.maxChunkBytes) {
      throw new ChunkError(
        `tensor "${chunk.name}": chunk of ${chunk.data.length} bytes, at most ${this.maxChunkBytes} allowed`,
      );
    }
    const count = chunk.data.length / size;
    const tensorSize = this.sizes[this.tensorIndex];
    if (count === 0 && tensorSize > 0) {
      throw new ChunkError(`tensor "${chunk.name}": empty chunk at offset ${chunk.offset}`);
    }
    if (this.offset + count > tensorSize) {
      throw new ChunkError(
        `tensor "${chunk.name}": chunk ends at element ${this.offset + count}, tensor has ${tensorSize}`,
      );
    }

    const flatOffset = this.flatBase + this.offset;
    const accepted: AcceptedChunk = {
      tensorIndex: this.tensorIndex,
      offset: this.offset,
      flatOffset,
      count,
      // Read lazily: a receiver that copies the raw bytes never pays for a misaligned view.
      get values() {
        return float32View(chunk.data);
      },
      copyInto(target: Float32Array): Float32Array {
        const bytes = new Uint8Array(
          target.buffer,
          target.byteOffset + 4 * flatOffset,
          chunk.data.length,
        );
        bytes.set(chunk.data);
        return target.subarray(flatOffset, flatOffset + count);
      },
    };
    this.offset += count;
    this.bytesReceived += chunk.data.length;
    if (this.offset === tensorSize) this.nextTensor();
    return accepted;
  }

  /** complete is true once every element of every tensor has arrived. */
  get complete(): boolean {
    this.skipEmptyTensorsBefore(undefined);
    return this.tensorIndex === this.specs.length;
  }

  /** missing describes what has not arrived yet, for an error message. */
  missing(): string {
    const spec = this.specs[this.tensorIndex];
    if (!spec) return 'nothing';
    return `tensor "${spec.name}" from element ${this.offset} of ${this.sizes[this.tensorIndex]} and ${this.specs.length - this.tensorIndex - 1} tensors after it`;
  }

  private nextTensor(): void {
    this.flatBase += this.sizes[this.tensorIndex];
    this.tensorIndex += 1;
    this.offset = 0;
  }

  // A tensor with zero elements is complete before any chunk arrives; a sender may or may not
  // send an empty chunk for it, so skip it unless this chunk names it.
  private skipEmptyTensorsBefore(name: string | undefined): void {
    while (
      this.tensorIndex < this.specs.length &&
      this.sizes[this.tensorIndex] === 0 &&
      this.specs[this.tensorIndex].name !== name
    ) {
      this.nextTensor();
    }
  }
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/**
 * TensorAssembler rebuilds whole tensors from a chunk stream whose header announced them
 * (the global model a trainer downloads). It holds exactly one copy of the model.
 */
export class TensorAssembler {
  private readonly sequence: ChunkSequence;
  readonly tensors: NamedTensor[];

  constructor(specs: readonly TensorSpec[]) {
    for (const s of specs) {
      if (DTYPE_BYTES[s.dtype] === undefined) {
        throw new ChunkError(
          `tensor "${s.name}": dtype "${s.dtype}" is not supported, expected one of ${Object.keys(DTYPE_BYTES).join(', ')}`,
        );
      }
    }
    this.sequence = new ChunkSequence(specs);
    this.tensors = specs.map((s) => ({
      name: s.name,
      dims: [...s.shape],
      data: new Float32Array(elementCount(s.shape)),
    }));
  }

  add(chunk: TensorChunk): void {
    const accepted = this.sequence.accept(chunk);
    this.tensors[accepted.tensorIndex].data.set(accepted.values, accepted.offset);
  }

  /** finish returns the tensors, or throws when some elements never arrived. */
  finish(): NamedTensor[] {
    if (!this.sequence.complete) {
      throw new ChunkError(`model stream ended early: missing ${this.sequence.missing()}`);
    }
    return this.tensors;
  }
}
