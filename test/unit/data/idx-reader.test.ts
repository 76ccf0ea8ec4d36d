import { writeFile } from 'fs/promises';
import { join } from 'path';
import { gzipSync } from 'zlib';
import { checkSampleShape, Dataset, loadDataset } from '../../../federation/data/dataset';
import { DatasetError } from '../../../federation/data/dataset-error';
import { useScratchDir } from './scratch-dir';

/** idxBytes builds an IDX file by hand: magic 0x0000<dtype><ndims>, big-endian dims, body. */
function idxBytes(dtypeCode: number, dims: number[], body: Uint8Array): Buffer {
  const header = Buffer.alloc(4 + 4 * dims.length);
  header[2] = dtypeCode;
  header[3] = dims.length;
  dims.forEach((d, i) => header.writeUInt32BE(d, 4 + 4 * i));
  return Buffer.concat([header, body]);
}

const UINT8 = 0x08;

/** Three 2x2 images with known bytes and labels 2, 0, 1. */
const pixels = Uint8Array.from([0, 255, 51, 102, 1, 2, 3, 4, 255, 255, 0, 0]);
const images = idxBytes(UINT8, [3, 2, 2], pixels);
const labels = idxBytes(UINT8, [3], Uint8Array.from([2, 0, 1]));

const scratch = useScratchDir('flotilla-idx-');
const { put, loadError } = scratch;

describe('loadDataset, IDX layout', () => {
  it('reads plain IDX images as channel-first samples scaled to [0, 1]', async () => {
    await put('train-images-idx3-ubyte', images);
    await put('train-labels-idx1-ubyte', labels);

    const ds = await loadDataset(scratch.path, 'train');

    expect(ds.count).toBe(3);
    expect(ds.sampleShape).toEqual([1, 2, 2]);
    expect(Array.from(ds.labels)).toEqual([2, 0, 1]);
    expect(ds.numClasses).toBe(3);
    expect(ds.features).toHaveLength(12);
    expect(Array.from(ds.features)).toEqual(Array.from(pixels).map((p) => Math.fround(p / 255)));
    expect(ds.source).toContain('train-images-idx3-ubyte');
  });

  it('reads gzip IDX files the same as plain ones', async () => {
    await put('t10k-images-idx3-ubyte.gz', gzipSync(images));
    await put('t10k-labels-idx1-ubyte.gz', gzipSync(labels));

    const ds = await loadDataset(scratch.path, 'test');

    expect(ds.count).toBe(3);
    expect(ds.sampleShape).toEqual([1, 2, 2]);
    expect(Array.from(ds.labels)).toEqual([2, 0, 1]);
    expect(ds.features[1]).toBe(1);
  });

  it('accepts test-* as the test split prefix', async () => {
    await put('test-images-idx3-ubyte.gz', gzipSync(images));
    await put('test-labels-idx1-ubyte', labels);

    const ds = await loadDataset(scratch.path, 'test');

    expect(ds.count).toBe(3);
  });

  it('keeps the per-sample dims of a 2-dimensional images file', async () => {
    await put('train-images-idx3-ubyte', idxBytes(UINT8, [3, 4], pixels));
    await put('train-labels-idx1-ubyte', labels);

    const ds = await loadDataset(scratch.path, 'train');

    expect(ds.sampleShape).toEqual([4]);
  });

  it('reads big-endian float32 images as they are and int32 labels', async () => {
    const body = Buffer.alloc(3 * 2 * 4);
    [-1.5, 0, 2, 3.25, 1e6, 7].forEach((v, i) => body.writeFloatBE(v, 4 * i));
    const labelBody = Buffer.alloc(12);
    [300, 0, 1].forEach((v, i) => labelBody.writeInt32BE(v, 4 * i));
    await put('train-images-idx3-ubyte', idxBytes(0x0d, [3, 2], body));
    await put('train-labels-idx1-ubyte', idxBytes(0x0c, [3], labelBody));

    const ds = await loadDataset(scratch.path, 'train');

    expect(Array.from(ds.features)).toEqual([-1.5, 0, 2, 3.25, 1e6, 7]);
    expect(Array.from(ds.labels)).toEqual([300, 0, 1]);
    expect(ds.numClasses).toBe(301);
  });

  it('takes numClasses from dataset.json when the directory declares it', async () => {
    await put('train-images-idx3-ubyte', images);
    await put('train-labels-idx1-ubyte', labels);
    await writeFile(join(scratch.path, 'dataset.json'), JSON.stringify({ numClasses: 10 }));

    const ds = await loadDataset(scratch.path, 'train');

    expect(ds.numClasses).toBe(10);
  });
});

describe('loadDataset, bad IDX input', () => {
  it('names the file and the expected and found sizes of a truncated file', async () => {
    await put('train-images-idx3-ubyte', images.subarray(0, images.length - 5));
    await put('train-labels-idx1-ubyte', labels);

    const err = await loadError();

    expect(err.message).toContain(join(scratch.path, 'train-images-idx3-ubyte'));
    expect(err.message).toContain('truncated');
    expect(err.message).toContain(`expected ${images.length} bytes`);
    expect(err.message).toContain(`found ${images.length - 5}`);
  });

  it('reports a truncated header', async () => {
    await put('train-images-idx3-ubyte', images.subarray(0, 10));
    await put('train-labels-idx1-ubyte', labels);

    const err = await loadError();

    expect(err.message).toMatch(/truncated IDX file: expected 16 bytes of header .*found 10/);
  });

  it('reports a cut-off gzip stream', async () => {
    const gz = gzipSync(images);
    await put('train-images-idx3-ubyte.gz', gz.subarray(0, gz.length - 12));
    await put('train-labels-idx1-ubyte.gz', gzipSync(labels));

    const err = await loadError();

    expect(err.message).toContain('train-images-idx3-ubyte.gz');
    expect(err.message).toContain('gzip stream is truncated or corrupt');
  });

  it('names the magic number seen and the one expected', async () => {
    const wrong = Buffer.from(images);
    wrong[0] = 0x1a;
    await put('train-images-idx3-ubyte', wrong);
    await put('train-labels-idx1-ubyte', labels);

    const err = await loadError();

    expect(err.message).toContain('wrong IDX magic number 0x1a000803');
    expect(err.message).toContain('expected 0x0000TTNN');
  });

  it('rejects an undefined dtype byte', async () => {
    await put('train-images-idx3-ubyte', idxBytes(0x07, [3, 2, 2], pixels));
    await put('train-labels-idx1-ubyte', labels);

    const err = await loadError();

    expect(err.message).toContain('wrong IDX magic number 0x00000703');
  });

  it('rejects float labels as an unsupported dtype', async () => {
    const body = Buffer.alloc(12);
    [2, 0, 1].forEach((v, i) => body.writeFloatBE(v, 4 * i));
    await put('train-images-idx3-ubyte', images);
    await put('train-labels-idx1-ubyte', idxBytes(0x0d, [3], body));

    const err = await loadError();

    expect(err.message).toContain('unsupported label dtype float32');
  });

  it('reports an images/labels count mismatch with both counts', async () => {
    await put('train-images-idx3-ubyte', images);
    await put('train-labels-idx1-ubyte', idxBytes(UINT8, [2], Uint8Array.from([0, 1])));

    const err = await loadError();

    expect(err.message).toContain('count mismatch: 3 images, 2 labels');
  });

  it('reports a label beyond the declared number of classes', async () => {
    await put('train-images-idx3-ubyte', images);
    await put('train-labels-idx1-ubyte', labels);
    await writeFile(join(scratch.path, 'dataset.json'), JSON.stringify({ numClasses: 2 }));

    const err = await loadError();

    expect(err.message).toContain('label out of range at sample 0: got 2, expected 0..1');
  });

  it('names the missing labels file when only the images are there', async () => {
    await put('train-images-idx3-ubyte.gz', gzipSync(images));

    const err = await loadError();

    expect(err.message).toContain('not their labels');
    expect(err.message).toContain('train-labels-idx1-ubyte.gz');
  });

  it('lists every layout it looked for when the directory holds none', async () => {
    const err = await loadError('test');

    expect(err.message).toContain(scratch.path);
    expect(err.message).toContain('no known layout for the test split');
    expect(err.message).toContain('t10k-images-idx3-ubyte[.gz]');
    expect(err.message).toContain('test-images-idx3-ubyte[.gz]');
  });
});

describe('checkSampleShape', () => {
  const ds: Dataset = {
    features: new Float32Array(784),
    sampleShape: [1, 28, 28],
    labels: new Int32Array(1),
    numClasses: 10,
    count: 1,
    source: '/data/fmnist',
  };

  it('accepts equal shapes, a flat model input of the same size, and dynamic dims', () => {
    expect(() => checkSampleShape(ds, [1, 28, 28])).not.toThrow();
    expect(() => checkSampleShape(ds, [784])).not.toThrow();
    expect(() => checkSampleShape(ds, [28, 28, 1])).not.toThrow();
    expect(() => checkSampleShape(ds, [1, -1, 28])).not.toThrow();
  });

  it('names the source, the sample shape and the model shape when they do not fit', () => {
    expect(() => checkSampleShape(ds, [3, 32, 32])).toThrow(
      "/data/fmnist: sample shape [1, 28, 28] does not fit the model's input shape [3, 32, 32]",
    );
  });

  it('refuses channel-last for channel-first data with several channels', () => {
    const rgb = { ...ds, sampleShape: [3, 32, 32] };
    expect(() => checkSampleShape(rgb, [32, 32, 3])).toThrow(DatasetError);
  });
});
