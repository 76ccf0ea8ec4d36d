import { NamedTensor } from '../../../federation/engine/tensor';
import {
  ChunkError,
  ChunkSequence,
  specsOf,
  TensorAssembler,
  tensorChunks,
} from '../../../federation/protocol/chunks';

function tensors(): NamedTensor[] {
  return [
    { name: 'w', dims: [3, 5], data: Float32Array.from({ length: 15 }, (_, i) => i / 7) },
    { name: 'empty', dims: [0], data: new Float32Array(0) },
    { name: 'b', dims: [5], data: Float32Array.from([1, -2, 3.5, 1e-30, -0]) },
  ];
}

describe('chunked tensor streams', () => {
  test('no chunk carries more than the bound, and reassembly is bit-exact', () => {
    const chunks = [...tensorChunks(tensors(), 16)];
    expect(Math.max(...chunks.map((c) => c.data.length))).toBe(16);
    expect(chunks.map((c) => [c.name, c.offset])).toEqual([
      ['w', 0],
      ['w', 4],
      ['w', 8],
      ['w', 12],
      ['empty', 0],
      ['b', 0],
      ['b', 4],
    ]);
    const assembler = new TensorAssembler(specsOf(tensors()));
    for (const c of chunks) assembler.add(c);
    const out = assembler.finish();
    expect(out.map((t) => Buffer.from(t.data.buffer).toString('hex'))).toEqual(
      tensors().map((t) => Buffer.from(t.data.buffer).toString('hex')),
    );
  });

  test('chunks are raw little-endian float32', () => {
    const [chunk] = tensorChunks([{ name: 'x', dims: [1], data: Float32Array.of(1) }]);
    expect(chunk.data.toString('hex')).toBe('0000803f');
  });

  test('a misaligned payload is read correctly', () => {
    const seq = new ChunkSequence(specsOf([{ name: 'x', dims: [2], data: new Float32Array(2) }]));
    const backing = Buffer.alloc(9);
    backing.writeFloatLE(1.5, 1);
    backing.writeFloatLE(-2, 5);
    const accepted = seq.accept({
      name: 'x',
      dtype: 'f32',
      shape: [2],
      offset: 0,
      data: backing.subarray(1),
    });
    expect(Array.from(accepted.values)).toEqual([1.5, -2]);
    expect(seq.complete).toBe(true);
  });

  test.each([
    ['a gap in offsets', { offset: 8 }, /chunk at offset 8, expected offset 4/],
    ['another tensor out of order', { name: 'b' }, /names tensor "b": expected "w"/],
    ['an unknown dtype', { dtype: 'f16' }, /dtype "f16", expected "f32"/],
    ['a different shape', { shape: [5, 3] }, /shape \[5,3\], expected \[3,5\]/],
    ['a chunk past the end', { data: Buffer.alloc(4 * 12) }, /ends at element 16, tensor has 15/],
  ])('refuses %s, naming what was expected', (_name, change, message) => {
    const seq = new ChunkSequence(specsOf(tensors()));
    const [first, second] = tensorChunks(tensors(), 16);
    seq.accept(first);
    const refuse = (): unknown => seq.accept({ ...second, ...change });
    expect(refuse).toThrow(ChunkError);
    expect(refuse).toThrow(message);
  });

  test('a stream that ends early says what is missing', () => {
    const assembler = new TensorAssembler(specsOf(tensors()));
    const [first] = tensorChunks(tensors(), 16);
    assembler.add(first);
    expect(() => assembler.finish()).toThrow(
      'missing tensor "w" from element 4 of 15 and 2 tensors after it',
    );
  });

  test('a chunk larger than the receiver allows is refused', () => {
    const seq = new ChunkSequence(specsOf(tensors()), 32);
    const [big] = tensorChunks(tensors(), 60);
    expect(() => seq.accept(big)).toThrow('chunk of 60 bytes, at most 32 allowed');
  });
});
