import { mkdir, writeFile } from 'fs/promises';
import { join } from 'path';
import { promisify } from 'util';
import { gzip } from 'zlib';
import type { Dataset } from './dataset';
import { IDX_DTYPE_CODES, IDX_DTYPE_SIZES, IdxDtype } from './idx-format';

const gzipAsync = promisify(gzip);

/** encodeIdx builds an IDX file: magic, big-endian dims, big-endian values. */
export function encodeIdx(dtype: IdxDtype, dims: number[], values: ArrayLike<number>): Buffer {
  const header = 4 + 4 * dims.length;
  const size = IDX_DTYPE_SIZES[dtype];
  const out = Buffer.alloc(header + values.length * size);
  out[2] = IDX_DTYPE_CODES[dtype];
  out[3] = dims.length;
  dims.forEach((d, i) => out.writeUInt32BE(d, 4 + 4 * i));
  if (dtype === 'uint8') {
    out.set(values as ArrayLike<number>, header);
    return out;
  }
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
  for (let i = 0; i < values.length; i++) {
    const at = header + i * size;
    if (dtype === 'int8') view.setInt8(at, values[i]);
    else if (dtype === 'int16') view.setInt16(at, values[i], false);
    else if (dtype === 'int32') view.setInt32(at, values[i], false);
    else if (dtype === 'float32') view.setFloat32(at, values[i], false);
    else view.setFloat64(at, values[i], false);
  }
  return out;
}

/**
 * writeIdxSplit writes the samples `indices` of `dataset` (all when omitted) as the gzip IDX
 * pair `<prefix>-images-idx3-ubyte.gz` and `<prefix>-labels-idx1-ubyte.gz` in `dir`.
 *
 * Features that are all whole multiples of 1/255 (images read from uint8) go back to uint8
 * bytes, losslessly; any other features are written as float32. Samples of shape
 * `[1, h, w]` are stored as `[n, h, w]`, which readIdxDataset reads back as `[1, h, w]`; other
 * shapes are stored as `[n, ...sampleShape]` (so a `[h, w]` sample comes back as `[1, h, w]`).
 */
export async function writeIdxSplit(
  dir: string,
  prefix: string,
  dataset: Dataset,
  indices?: ArrayLike<number>,
): Promise<void> {
  const picked = indices ?? Int32Array.from({ length: dataset.count }, (_, i) => i);
  const sampleSize = dataset.sampleShape.reduce((a, b) => a * b, 1);
  const features = new Float32Array(picked.length * sampleSize);
  const labels = new Int32Array(picked.length);
  for (let i = 0; i < picked.length; i++) {
    const from = picked[i] * sampleSize;
    features.set(dataset.features.subarray(from, from + sampleSize), i * sampleSize);
    labels[i] = dataset.labels[picked[i]];
  }

  const shape = dataset.sampleShape;
  const perSample = shape.length === 3 && shape[0] === 1 ? shape.slice(1) : shape;
  const dims = [picked.length, ...perSample];
  const bytes = toBytes(features);
  const images =
    bytes !== undefined ? encodeIdx('uint8', dims, bytes) : encodeIdx('float32', dims, features);
  const labelsType: IdxDtype = dataset.numClasses <= 256 ? 'uint8' : 'int32';

  await mkdir(dir, { recursive: true });
  const [imagesGz, labelsGz] = await Promise.all([
    gzipAsync(images),
    gzipAsync(encodeIdx(labelsType, [picked.length], labels)),
  ]);
  await writeFile(join(dir, `${prefix}-images-idx3-ubyte.gz`), imagesGz);
  await writeFile(join(dir, `${prefix}-labels-idx1-ubyte.gz`), labelsGz);
}

/** BYTE_VALUES[b] is b / 255 as the float32 the readers produce for byte b. */
const BYTE_VALUES = Float32Array.from({ length: 256 }, (_, b) => b / 255);

/**
 * toBytes turns features back into the bytes they were scaled from, or returns undefined when
 * some value is not exactly a byte / 255 (features that did not come from uint8 images).
 */
function toBytes(features: Float32Array): Uint8Array | undefined {
  const bytes = new Uint8Array(features.length);
  for (let i = 0; i < features.length; i++) {
    const v = features[i];
    const b = Math.round(v * 255);
    // The range test comes first: BYTE_VALUES[b] is undefined outside 0..255 (and for NaN).
    if (!(b >= 0 && b <= 255) || BYTE_VALUES[b] !== v) return undefined;
    bytes[i] = b;
  }
  return bytes;
}
