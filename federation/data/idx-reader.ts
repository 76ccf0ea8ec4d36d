import { DatasetError } from './dataset-error';
import { readFileBytes } from './file-bytes';
import { hex, IDX_DTYPE_CODES, IDX_DTYPE_SIZES, IdxDtype, idxDtypeOf } from './idx-format';
import type { Dataset } from './dataset';
import { maxLabelPlusOne } from './labels';

/** IdxArray is the decoded content of one IDX file. */
export interface IdxArray {
  dtype: IdxDtype;
  /** Sizes of each dimension; the first is the number of samples. */
  dims: number[];
  /** The values, in the file's row-major order. uint8 stays raw bytes (0..255). */
  values: Uint8Array | Int8Array | Int16Array | Int32Array | Float32Array | Float64Array;
}

/**
 * parseIdx decodes an IDX file already in memory. `source` names the file in errors. The
 * file must be exactly as long as its header says: a shorter one is truncated, a longer one
 * is most likely not the file it claims to be.
 */
export function parseIdx(bytes: Uint8Array, source: string): IdxArray {
  if (bytes.length < 4) {
    throw new DatasetError(
      source,
      `truncated IDX file: expected at least 4 bytes of header, found ${bytes.length}`,
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const magic = view.getUint32(0, false);
  const dtype = idxDtypeOf(bytes[2]);
  if (bytes[0] !== 0 || bytes[1] !== 0 || dtype === undefined || bytes[3] === 0) {
    throw new DatasetError(
      source,
      `wrong IDX magic number ${hex(magic, 8)}: expected 0x0000TTNN with dtype TT one of ` +
        `${Object.values(IDX_DTYPE_CODES)
          .map((c) => hex(c))
          .join(', ')} and NN >= 1 dimensions`,
    );
  }

  const ndims = bytes[3];
  const headerBytes = 4 + 4 * ndims;
  if (bytes.length < headerBytes) {
    throw new DatasetError(
      source,
      `truncated IDX file: expected ${headerBytes} bytes of header for ${ndims} dimensions, ` +
        `found ${bytes.length}`,
    );
  }
  const dims: number[] = [];
  for (let d = 0; d < ndims; d++) dims.push(view.getUint32(4 + 4 * d, false));

  const elementSize = IDX_DTYPE_SIZES[dtype];
  const expected = headerBytes + dims.reduce((a, b) => a * b, 1) * elementSize;
  if (bytes.length !== expected) {
    const what = bytes.length < expected ? 'truncated IDX file' : 'IDX file has trailing bytes';
    throw new DatasetError(
      source,
      `${what}: expected ${expected} bytes for ${dtype} of shape [${dims.join(', ')}], ` +
        `found ${bytes.length}`,
    );
  }
  return { dtype, dims, values: decodeValues(view, headerBytes, expected, dtype) };
}

/**
 * decodeValues copies big-endian elements out of the body into a typed array. Plain loops:
 * TypedArray.from with a mapping function is many times slower on tens of millions of values.
 */
function decodeValues(view: DataView, start: number, end: number, dtype: IdxDtype) {
  const n = (end - start) / IDX_DTYPE_SIZES[dtype];
  switch (dtype) {
    case 'uint8':
      return new Uint8Array(view.buffer, view.byteOffset + start, n).slice();
    case 'int8':
      return new Int8Array(view.buffer, view.byteOffset + start, n).slice();
    case 'int16': {
      const out = new Int16Array(n);
      for (let i = 0; i < n; i++) out[i] = view.getInt16(start + 2 * i, false);
      return out;
    }
    case 'int32': {
      const out = new Int32Array(n);
      for (let i = 0; i < n; i++) out[i] = view.getInt32(start + 4 * i, false);
      return out;
    }
    case 'float32': {
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = view.getFloat32(start + 4 * i, false);
      return out;
    }
    case 'float64': {
      const out = new Float64Array(n);
      for (let i = 0; i < n; i++) out[i] = view.getFloat64(start + 8 * i, false);
      return out;
    }
  }
}

/** readIdxFile reads and decodes one IDX file, plain or gzip. */
export async function readIdxFile(path: string): Promise<IdxArray> {
  return parseIdx(await readFileBytes(path), path);
}

/**
 * readIdxDataset reads an images file and a labels file into a Dataset.
 *
 * Samples of an `[n, rows, cols]` images file get the channel-first shape `[1, rows, cols]`;
 * any other rank keeps its per-sample dims (`[n, k]` gives `[k]`, `[n, c, h, w]` gives
 * `[c, h, w]`). uint8 images are scaled to [0, 1]; other element types are taken as they are.
 * `numClasses` is the largest label + 1; loadDataset replaces it when the directory declares it.
 */
export async function readIdxDataset(imagesPath: string, labelsPath: string): Promise<Dataset> {
  const [images, labels] = await Promise.all([readIdxFile(imagesPath), readIdxFile(labelsPath)]);
  const source = `${imagesPath} + ${labelsPath}`;

  if (images.dims.length < 2) {
    throw new DatasetError(
      imagesPath,
      `images must have at least 2 dimensions (samples first), got shape [${images.dims.join(', ')}]`,
    );
  }
  if (labels.dims.length !== 1) {
    throw new DatasetError(
      labelsPath,
      `labels must have 1 dimension, got shape [${labels.dims.join(', ')}]`,
    );
  }
  const count = images.dims[0];
  if (labels.dims[0] !== count) {
    throw new DatasetError(
      source,
      `images/labels count mismatch: ${count} images, ${labels.dims[0]} labels`,
    );
  }

  const labelValues = toLabels(labels, labelsPath);
  const perSample = images.dims.slice(1);
  const sampleShape = perSample.length === 2 ? [1, ...perSample] : perSample;
  return {
    features: toFeatures(images),
    sampleShape,
    labels: labelValues,
    numClasses: maxLabelPlusOne(labelValues),
    count,
    source,
  };
}

/** toFeatures widens image values to float32, scaling bytes to [0, 1]. */
function toFeatures(images: IdxArray): Float32Array {
  if (images.dtype !== 'uint8') return Float32Array.from(images.values);
  const features = new Float32Array(images.values.length);
  for (let i = 0; i < features.length; i++) features[i] = images.values[i] / 255;
  return features;
}

/** toLabels checks that labels are whole, non-negative class indices. */
function toLabels(labels: IdxArray, path: string): Int32Array {
  if (labels.dtype === 'float32' || labels.dtype === 'float64') {
    throw new DatasetError(
      path,
      `unsupported label dtype ${labels.dtype}: expected an integer type (uint8, int8, int16, int32)`,
    );
  }
  const out = Int32Array.from(labels.values);
  const bad = out.findIndex((v) => v < 0);
  if (bad >= 0) {
    throw new DatasetError(
      path,
      `label out of range at index ${bad}: got ${out[bad]}, expected a class index >= 0`,
    );
  }
  return out;
}
