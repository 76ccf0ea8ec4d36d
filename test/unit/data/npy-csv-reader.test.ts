import { join } from 'path';
import { loadDataset } from '../../../federation/data/dataset';
import { useScratchDir } from './scratch-dir';

/**
 * npyBytes builds a version-1 `.npy` file the way NumPy writes one: the magic, the version,
 * a uint16 header length, a dict header padded with spaces to a 64-byte boundary and ended
 * with a newline, then the body.
 */
function npyBytes(descr: string, shape: number[], body: Buffer, fortranOrder = 'False'): Buffer {
  const shapeText = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`;
  let header = `{'descr': '${descr}', 'fortran_order': ${fortranOrder}, 'shape': ${shapeText}, }`;
  const total = 10 + header.length + 1;
  header += ' '.repeat((64 - (total % 64)) % 64) + '\n';
  const prefix = Buffer.alloc(10);
  prefix[0] = 0x93;
  prefix.write('NUMPY', 1, 'latin1');
  prefix[6] = 1;
  prefix.writeUInt16LE(header.length, 8);
  return Buffer.concat([prefix, Buffer.from(header, 'latin1'), body]);
}

function f32(values: number[]): Buffer {
  return Buffer.from(Float32Array.from(values).buffer);
}

function i64(values: number[]): Buffer {
  return Buffer.from(BigInt64Array.from(values.map(BigInt)).buffer);
}

const scratch = useScratchDir('flotilla-npy-csv-');
const { put, loadError } = scratch;

describe('loadDataset, NPY layout', () => {
  it('reads float32 features of shape [n, k] and int64 labels', async () => {
    await put('train-x.npy', npyBytes('<f4', [3, 2], f32([0.5, -1, 2, 3.25, 4, 5])));
    await put('train-y.npy', npyBytes('<i8', [3], i64([1, 0, 4])));

    const ds = await loadDataset(scratch.path, 'train');

    expect(ds.count).toBe(3);
    expect(ds.sampleShape).toEqual([2]);
    expect(Array.from(ds.features)).toEqual([0.5, -1, 2, 3.25, 4, 5]);
    expect(Array.from(ds.labels)).toEqual([1, 0, 4]);
    expect(ds.numClasses).toBe(5);
  });

  it('scales uint8 features to [0, 1], reads float64 and int32, and labels of shape [n, 1]', async () => {
    await put('test-x.npy', npyBytes('|u1', [2, 1, 2, 1], Buffer.from([0, 255, 51, 0])));
    await put('test-y.npy', npyBytes('<i4', [2, 1], Buffer.from(Int32Array.from([1, 1]).buffer)));

    const ds = await loadDataset(scratch.path, 'test');

    expect(ds.sampleShape).toEqual([1, 2, 1]);
    expect(Array.from(ds.features)).toEqual([0, 1, 0.2, 0].map(Math.fround));
    expect(Array.from(ds.labels)).toEqual([1, 1]);

    await put('test-x.npy', npyBytes('<f8', [2], Buffer.from(Float64Array.from([1.5, 2]).buffer)));
    const flat = await loadDataset(scratch.path, 'test');
    expect(flat.sampleShape).toEqual([1]);
    expect(Array.from(flat.features)).toEqual([1.5, 2]);
  });

  it('reports an unsupported dtype with the ones it takes', async () => {
    await put('train-x.npy', npyBytes('>f4', [1, 1], f32([1])));
    await put('train-y.npy', npyBytes('<i8', [1], i64([0])));

    const err = await loadError();

    expect(err.message).toContain(join(scratch.path, 'train-x.npy'));
    expect(err.message).toContain('unsupported NPY dtype ">f4": expected one of <f4, <f8');
  });

  it('reports Fortran order', async () => {
    await put('train-x.npy', npyBytes('<f4', [1, 1], f32([1]), 'True'));
    await put('train-y.npy', npyBytes('<i8', [1], i64([0])));

    const err = await loadError();

    expect(err.message).toContain('fortran_order: expected False (C order), got true');
  });

  it('reports a truncated body with the expected and found sizes', async () => {
    const whole = npyBytes('<f4', [3, 2], f32([1, 2, 3, 4, 5, 6]));
    await put('train-x.npy', whole.subarray(0, whole.length - 4));
    await put('train-y.npy', npyBytes('<i8', [3], i64([0, 1, 2])));

    const err = await loadError();

    expect(err.message).toContain(
      `truncated NPY file: expected ${whole.length} bytes for float32 of shape [3, 2], found ${whole.length - 4}`,
    );
  });

  it('reports a wrong magic', async () => {
    await put('train-x.npy', Buffer.from('PK\u0003\u0004 this is a zip file'));
    await put('train-y.npy', npyBytes('<i8', [1], i64([0])));

    const err = await loadError();

    expect(err.message).toContain('wrong NPY magic "PK\\u0003\\u0004 t": expected "\\x93NUMPY"');
  });

  it('reports a features/labels count mismatch', async () => {
    await put('train-x.npy', npyBytes('<f4', [3, 1], f32([1, 2, 3])));
    await put('train-y.npy', npyBytes('<i8', [2], i64([0, 1])));

    const err = await loadError();

    expect(err.message).toContain('count mismatch: 3 samples, 2 labels');
  });

  it('reports a negative label', async () => {
    await put('train-x.npy', npyBytes('<f4', [2, 1], f32([1, 2])));
    await put('train-y.npy', npyBytes('<i8', [2], i64([0, -3])));

    const err = await loadError();

    expect(err.message).toContain('label out of range at index 1: got -3');
  });
});

describe('loadDataset, CSV layout', () => {
  it('detects a header and takes the column named label', async () => {
    await put('train.csv', 'x1,x2,label\n0.5,1,2\n3,4,0\n');

    const ds = await loadDataset(scratch.path, 'train');

    expect(ds.count).toBe(2);
    expect(ds.sampleShape).toEqual([2]);
    expect(Array.from(ds.features)).toEqual([0.5, 1, 3, 4]);
    expect(Array.from(ds.labels)).toEqual([2, 0]);
    expect(ds.numClasses).toBe(3);
  });

  it('takes the first column as the label when there is no header', async () => {
    await put('test.csv', '1,0.25,7\r\n0,2,3\r\n');

    const ds = await loadDataset(scratch.path, 'test');

    expect(Array.from(ds.labels)).toEqual([1, 0]);
    expect(Array.from(ds.features)).toEqual([0.25, 7, 2, 3]);
  });

  it('names the line and column of a field that is not a number', async () => {
    await put('train.csv', 'label,a,b\n0,1,2\n1,x,3\n');

    const err = await loadError();

    expect(err.message).toBe(
      `${join(scratch.path, 'train.csv')}:3: column 2: expected a number, got "x"`,
    );
  });

  it('reports a row with the wrong number of fields', async () => {
    await put('train.csv', '0,1,2\n1,2\n');

    const err = await loadError();

    expect(err.message).toContain('train.csv:2: expected 3 fields like the first line, found 2');
  });

  it('reports a label that is not a class index', async () => {
    await put('train.csv', 'label,a\n0,1\n1.5,2\n');

    const err = await loadError();

    expect(err.message).toContain('label out of range in column 1: got 1.5');
  });

  it('prefers IDX over CSV when a directory holds both', async () => {
    await put('train.csv', '0,1\n');
    await put('train-images-idx3-ubyte', Buffer.from([0, 0, 8, 2, 0, 0, 0, 1, 0, 0, 0, 1, 9]));
    await put('train-labels-idx1-ubyte', Buffer.from([0, 0, 8, 1, 0, 0, 0, 1, 0]));

    const ds = await loadDataset(scratch.path, 'train');

    expect(ds.source).toContain('train-images-idx3-ubyte');
  });

  it('lists the NPY and CSV layouts among those looked for', async () => {
    const err = await loadError();

    expect(err.message).toContain('NPY train-x.npy + train-y.npy');
    expect(err.message).toContain('CSV train.csv');
  });
});
