import { access, readFile } from 'fs/promises';
import { join } from 'path';
import { DatasetError, NoDatasetLayoutError } from './dataset-error';
import { readCsvDataset } from './csv-reader';
import { readIdxDataset } from './idx-reader';
import { readNpyDataset } from './npy-reader';

/**
 * Dataset is one split of labelled samples held in memory, the form every trainer, evaluator
 * and partitioner works on whatever file format it came from.
 */
export interface Dataset {
  /** Row-major, `count * product(sampleShape)` values; image bytes are scaled to [0, 1]. */
  features: Float32Array;
  /** Shape of one sample: `[1, 28, 28]` for IDX images (channel first), `[n]` for CSV/NPY rows. */
  sampleShape: number[];
  /** Class index of each sample. */
  labels: Int32Array;
  /** Declared in the directory's `dataset.json`, else the largest label + 1 over the split. */
  numClasses: number;
  count: number;
  /** The file(s) or directory the split came from, for error messages. */
  source: string;
}

/** Split names the two splits a dataset directory can hold. */
export type Split = 'train' | 'test';

/**
 * DATASET_METADATA_FILE is the optional JSON file in a dataset directory that declares
 * `{ "numClasses": n }`. A site's share of a skewed partition may lack the highest classes,
 * so the partition writer declares the count rather than let each site guess it.
 */
export const DATASET_METADATA_FILE = 'dataset.json';

/** The file-name prefixes of the IDX layout for each split (MNIST calls its test split t10k). */
const IDX_PREFIXES: Record<Split, string[]> = { train: ['train'], test: ['t10k', 'test'] };

/** Layout is one way a split can be stored in a directory, and how to read it. */
interface Layout {
  /** What was looked for, for the "no known layout" error. */
  describe: string;
  /** Returns a reader when the files are there, undefined when they are not. */
  find(dir: string): Promise<(() => Promise<Dataset>) | undefined>;
}

function idxLayout(prefix: string): Layout {
  const images = `${prefix}-images-idx3-ubyte`;
  const labels = `${prefix}-labels-idx1-ubyte`;
  return {
    describe: `IDX ${images}[.gz] + ${labels}[.gz]`,
    async find(dir) {
      const imagesPath = await firstExisting(dir, [images, `${images}.gz`]);
      if (imagesPath === undefined) return undefined;
      const labelsPath = await firstExisting(dir, [labels, `${labels}.gz`]);
      if (labelsPath === undefined) {
        throw new DatasetError(
          imagesPath,
          `found the images but not their labels: expected ${labels} or ${labels}.gz in ${dir}`,
        );
      }
      return () => readIdxDataset(imagesPath, labelsPath);
    },
  };
}

function npyLayout(split: Split): Layout {
  const features = `${split}-x.npy`;
  const labels = `${split}-y.npy`;
  return {
    describe: `NPY ${features} + ${labels}`,
    async find(dir) {
      const featuresPath = await firstExisting(dir, [features]);
      if (featuresPath === undefined) return undefined;
      const labelsPath = await firstExisting(dir, [labels]);
      if (labelsPath === undefined) {
        throw new DatasetError(
          featuresPath,
          `found the features but not their labels: expected ${labels} in ${dir}`,
        );
      }
      return () => readNpyDataset(featuresPath, labelsPath);
    },
  };
}

function csvLayout(split: Split): Layout {
  const name = `${split}.csv`;
  return {
    describe: `CSV ${name}`,
    async find(dir) {
      const path = await firstExisting(dir, [name]);
      return path === undefined ? undefined : () => readCsvDataset(path);
    },
  };
}

function layoutsFor(split: Split): Layout[] {
  return [...IDX_PREFIXES[split].map(idxLayout), npyLayout(split), csvLayout(split)];
}

/**
 * loadDataset reads one split from `dir`, trying each known layout in turn: IDX (plain or
 * gzip), then NPY, then CSV. It throws a DatasetError naming the file and the problem for bad
 * input, and a NoDatasetLayoutError listing every layout it looked for when the directory
 * holds none of them.
 */
export async function loadDataset(dir: string, split: Split): Promise<Dataset> {
  const layouts = layoutsFor(split);
  for (const layout of layouts) {
    const read = await layout.find(dir);
    if (read === undefined) continue;
    return applyMetadata(await read(), dir);
  }
  throw new NoDatasetLayoutError(
    dir,
    `no known layout for the ${split} split: looked for ${layouts.map((l) => l.describe).join('; ')}`,
  );
}

/** applyMetadata takes numClasses from dataset.json when present and checks labels against it. */
async function applyMetadata(dataset: Dataset, dir: string): Promise<Dataset> {
  const path = join(dir, DATASET_METADATA_FILE);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    return dataset;
  }
  let declared: unknown;
  try {
    declared = (JSON.parse(text) as { numClasses?: unknown }).numClasses;
  } catch (err) {
    throw new DatasetError(path, `not valid JSON (${(err as Error).message})`);
  }
  if (typeof declared !== 'number' || !Number.isInteger(declared) || declared < 1) {
    throw new DatasetError(
      path,
      `numClasses: must be an integer >= 1, got ${JSON.stringify(declared)}`,
    );
  }
  const bad = dataset.labels.findIndex((label) => label >= declared);
  if (bad >= 0) {
    throw new DatasetError(
      dataset.source,
      `label out of range at sample ${bad}: got ${dataset.labels[bad]}, expected 0..${declared - 1} ` +
        `(numClasses ${declared} from ${path})`,
    );
  }
  return { ...dataset, numClasses: declared };
}

/** firstExisting returns the path of the first of `names` present in `dir`. */
async function firstExisting(dir: string, names: string[]): Promise<string | undefined> {
  for (const name of names) {
    const path = join(dir, name);
    try {
      await access(path);
      return path;
    } catch {
      // Absent: try the next name.
    }
  }
  return undefined;
}

/**
 * checkSampleShape throws when a dataset's samples cannot feed a model whose per-sample input
 * shape (without the batch dimension) is `modelInputShape`. A dim <= 0 in the model's shape is
 * dynamic and matches any size.
 *
 * Reshaping is allowed only when it moves no value: the shapes hold the same number of values
 * and either they are equal once size-1 dims are dropped (`[1, 28, 28]` vs `[28, 28, 1]`), or
 * one side is flat (`[784]` vs `[1, 28, 28]`). `[3, 32, 32]` vs `[32, 32, 3]` is refused, since
 * channel-first and channel-last data differ in memory.
 */
export function checkSampleShape(dataset: Dataset, modelInputShape: number[]): void {
  if (sampleShapeFits(dataset.sampleShape, modelInputShape)) return;
  throw new DatasetError(
    dataset.source,
    `sample shape [${dataset.sampleShape.join(', ')}] does not fit the model's input shape ` +
      `[${modelInputShape.join(', ')}] (per sample, batch dimension excluded)`,
  );
}

function sampleShapeFits(sample: number[], model: number[]): boolean {
  const dynamic = model.some((d) => d <= 0);
  if (dynamic) {
    return model.length === sample.length && model.every((d, i) => d <= 0 || d === sample[i]);
  }
  const size = (shape: number[]) => shape.reduce((a, b) => a * b, 1);
  if (size(sample) !== size(model)) return false;
  const squeeze = (shape: number[]) => shape.filter((d) => d !== 1);
  const s = squeeze(sample);
  const m = squeeze(model);
  if (s.length <= 1 || m.length <= 1) return true;
  return s.length === m.length && s.every((d, i) => d === m[i]);
}
