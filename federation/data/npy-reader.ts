import { DatasetError } from './dataset-error';
import { readFileBytes } from './file-bytes';
import type { Dataset } from './dataset';
import { maxLabelPlusOne } from './labels';

/**
 * The NumPy `.npy` format: the magic `\x93NUMPY`, a major and minor version byte, the header
 * length (uint16 little-endian in version 1, uint32 in versions 2 and 3), a header that is a
 * Python dict literal (`{'descr': '<f4', 'fortran_order': False, 'shape': (n, k), }`), then
 * the array's bytes.
 */

/** NpyDtype names the element types this reader takes. */
export type NpyDtype = 'float32' | 'float64' | 'uint8' | 'int32' | 'int64';

/** NPY_DESCRS maps the `descr` strings we accept to element types. */
const NPY_DESCRS: Record<string, NpyDtype> = {
  '<f4': 'float32',
  '<f8': 'float64',
  '|u1': 'uint8',
  '<u1': 'uint8',
  '<i4': 'int32',
  '<i8': 'int64',
};

const ITEM_SIZES: Record<NpyDtype, number> = {
  float32: 4,
  float64: 8,
  uint8: 1,
  int32: 4,
  int64: 8,
};

const MAGIC = Buffer.from([0x93, ...Buffer.from('NUMPY')]);

/** NpyArray is the decoded content of one `.npy` file, values widened to plain numbers. */
export interface NpyArray {
  dtype: NpyDtype;
  shape: number[];
  values: Float32Array | Float64Array | Uint8Array | Int32Array;
}

/** parseNpy decodes a `.npy` file already in memory; `source` names it in errors. */
export function parseNpy(bytes: Uint8Array, source: string): NpyArray {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (buf.length >= 6 && buf.length < 10 && buf.subarray(0, 6).equals(MAGIC)) {
    throw new DatasetError(
      source,
      `truncated NPY file: expected at least 10 bytes of preamble, found ${buf.length}`,
    );
  }
  if (buf.length < 6 || !buf.subarray(0, 6).equals(MAGIC)) {
    const seen = JSON.stringify(buf.subarray(0, 6).toString('latin1'));
    throw new DatasetError(source, `wrong NPY magic ${seen}: expected "\\x93NUMPY"`);
  }
  const major = buf[6];
  if (major < 1 || major > 3) {
    throw new DatasetError(
      source,
      `unsupported NPY version ${major}.${buf[7]}: expected 1, 2 or 3`,
    );
  }
  const lengthBytes = major === 1 ? 2 : 4;
  const headerLength = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const bodyStart = 8 + lengthBytes + headerLength;
  if (buf.length < bodyStart) {
    throw new DatasetError(
      source,
      `truncated NPY file: expected ${bodyStart} bytes of header, found ${buf.length}`,
    );
  }
  const headerText = buf
    .subarray(8 + lengthBytes, bodyStart)
    .toString(major === 3 ? 'utf8' : 'latin1');
  const header = parseHeader(headerText, source);

  const size = header.shape.reduce((a, b) => a * b, 1);
  const expected = bodyStart + size * ITEM_SIZES[header.dtype];
  if (buf.length !== expected) {
    const what = buf.length < expected ? 'truncated NPY file' : 'NPY file has trailing bytes';
    throw new DatasetError(
      source,
      `${what}: expected ${expected} bytes for ${header.dtype} of shape ` +
        `[${header.shape.join(', ')}], found ${buf.length}`,
    );
  }
  // Copying the body gives an aligned buffer for the typed-array view.
  const body = new Uint8Array(buf.subarray(bodyStart, expected)).buffer;
  return { dtype: header.dtype, shape: header.shape, values: viewValues(body, header.dtype, size) };
}

// TODO: values are viewed in host byte order, which is little-endian on every platform Node
// ships for (x64, arm64); a big-endian host would misread '<' arrays.
function viewValues(body: ArrayBuffer, dtype: NpyDtype, size: number): NpyArray['values'] {
  switch (dtype) {
    case 'float32':
      return new Float32Array(body, 0, size);
    case 'float64':
      return new Float64Array(body, 0, size);
    case 'uint8':
      return new Uint8Array(body, 0, size);
    case 'int32':
      return new Int32Array(body, 0, size);
    case 'int64': {
      const wide = new BigInt64Array(body, 0, size);
      const out = new Float64Array(size);
      for (let i = 0; i < size; i++) out[i] = Number(wide[i]);
      return out;
    }
  }
}

interface NpyHeader {
  dtype: NpyDtype;
  shape: number[];
}

/** parseHeader reads the header dict and checks its three keys. */
function parseHeader(text: string, source: string): NpyHeader {
  let dict: unknown;
  try {
    dict = new PythonLiteral(text).parseValue();
  } catch (err) {
    throw new DatasetError(
      source,
      `unreadable NPY header ${JSON.stringify(text.trim())}: ${(err as Error).message}`,
    );
  }
  if (typeof dict !== 'object' || dict === null || Array.isArray(dict)) {
    throw new DatasetError(source, `NPY header must be a dict, got ${JSON.stringify(text.trim())}`);
  }
  const { descr, fortran_order: fortranOrder, shape } = dict as Record<string, unknown>;
  const dtype = typeof descr === 'string' ? NPY_DESCRS[descr] : undefined;
  if (dtype === undefined) {
    throw new DatasetError(
      source,
      `unsupported NPY dtype ${JSON.stringify(descr)}: expected one of ` +
        `${Object.keys(NPY_DESCRS).join(', ')} (little-endian)`,
    );
  }
  if (fortranOrder !== false) {
    throw new DatasetError(
      source,
      `fortran_order: expected False (C order), got ${JSON.stringify(fortranOrder)}`,
    );
  }
  if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) {
    throw new DatasetError(
      source,
      `shape: expected a tuple of sizes, got ${JSON.stringify(shape)}`,
    );
  }
  return { dtype, shape: shape as number[] };
}

/**
 * PythonLiteral parses the small subset of Python literals an NPY header uses: dicts,
 * tuples, strings, integers, True, False and None.
 */
class PythonLiteral {
  private pos = 0;

  constructor(private readonly text: string) {}

  parseValue(): unknown {
    this.skipSpace();
    const c = this.text[this.pos];
    if (c === '{') return this.parseDict();
    if (c === '(' || c === '[') return this.parseSequence(c === '(' ? ')' : ']');
    if (c === "'" || c === '"') return this.parseString();
    const word = /^(True|False|None|-?\d+)/.exec(this.text.slice(this.pos));
    if (word === null) throw new Error(`unexpected ${JSON.stringify(c ?? 'end')} at ${this.pos}`);
    this.pos += word[0].length;
    if (word[0] === 'True') return true;
    if (word[0] === 'False') return false;
    if (word[0] === 'None') return null;
    return Number(word[0]);
  }

  private parseDict(): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    this.pos++;
    for (;;) {
      this.skipSpace();
      if (this.eat('}')) return out;
      const key = this.parseValue();
      if (typeof key !== 'string') throw new Error(`dict key must be a string at ${this.pos}`);
      this.skipSpace();
      this.expect(':');
      out[key] = this.parseValue();
      this.skipSpace();
      if (!this.eat(',')) {
        this.skipSpace();
        this.expect('}');
        return out;
      }
    }
  }

  private parseSequence(close: string): unknown[] {
    const out: unknown[] = [];
    this.pos++;
    for (;;) {
      this.skipSpace();
      if (this.eat(close)) return out;
      out.push(this.parseValue());
      this.skipSpace();
      if (!this.eat(',')) {
        this.skipSpace();
        this.expect(close);
        return out;
      }
    }
  }

  private parseString(): string {
    const quote = this.text[this.pos];
    const end = this.text.indexOf(quote, this.pos + 1);
    if (end < 0) throw new Error(`unterminated string at ${this.pos}`);
    const s = this.text.slice(this.pos + 1, end);
    this.pos = end + 1;
    return s;
  }

  private skipSpace(): void {
    while (/\s/.test(this.text[this.pos] ?? '')) this.pos++;
  }

  private eat(c: string): boolean {
    if (this.text[this.pos] !== c) return false;
    this.pos++;
    return true;
  }

  private expect(c: string): void {
    if (!this.eat(c)) throw new Error(`expected ${JSON.stringify(c)} at ${this.pos}`);
  }
}

/** readNpyFile reads and decodes one `.npy` file (gzip-compressed files are inflated too). */
export async function readNpyFile(path: string): Promise<NpyArray> {
  return parseNpy(await readFileBytes(path), path);
}

/**
 * readNpyDataset reads a features file (`[n, ...]`) and a labels file (`[n]` or `[n, 1]`) into
 * a Dataset. uint8 features are scaled to [0, 1] like IDX images; other types are taken as
 * they are. A 1-dimensional features file gives samples of shape `[1]`.
 */
export async function readNpyDataset(featuresPath: string, labelsPath: string): Promise<Dataset> {
  const [x, y] = await Promise.all([readNpyFile(featuresPath), readNpyFile(labelsPath)]);
  const source = `${featuresPath} + ${labelsPath}`;

  if (x.shape.length < 1) {
    throw new DatasetError(featuresPath, `features must have a samples dimension, got shape []`);
  }
  const labelsShapeOk = y.shape.length === 1 || (y.shape.length === 2 && y.shape[1] === 1);
  if (!labelsShapeOk) {
    throw new DatasetError(
      labelsPath,
      `labels must have shape [n] or [n, 1], got [${y.shape.join(', ')}]`,
    );
  }
  const count = x.shape[0];
  if (y.shape[0] !== count) {
    throw new DatasetError(
      source,
      `features/labels count mismatch: ${count} samples, ${y.shape[0]} labels`,
    );
  }

  const features = x.values instanceof Float32Array ? x.values : new Float32Array(x.values.length);
  if (!(x.values instanceof Float32Array)) {
    // Division, not multiplication by 1/255, so bytes map to the same floats as IDX images.
    const scale = x.dtype === 'uint8' ? 255 : 1;
    for (let i = 0; i < features.length; i++) features[i] = x.values[i] / scale;
  }
  const labels = toLabels(y, labelsPath);
  return {
    features,
    sampleShape: x.shape.length === 1 ? [1] : x.shape.slice(1),
    labels,
    numClasses: maxLabelPlusOne(labels),
    count,
    source,
  };
}

/** toLabels checks that every label is a whole, non-negative class index. */
function toLabels(y: NpyArray, path: string): Int32Array {
  const labels = new Int32Array(y.values.length);
  for (let i = 0; i < labels.length; i++) {
    const v = y.values[i];
    if (!Number.isInteger(v) || v < 0 || v > 0x7fffffff) {
      throw new DatasetError(
        path,
        `label out of range at index ${i}: got ${v}, expected a whole class index >= 0`,
      );
    }
    labels[i] = v;
  }
  return labels;
}
