import { mkdir, readdir, readFile, rm, writeFile } from 'fs/promises';
import { join } from 'path';
import { Dataset, DATASET_METADATA_FILE } from './dataset';
import { writeIdxSplit } from './idx-writer';
import { classCounts } from './labels';
import { DatasetError } from './dataset-error';
import {
  DEFAULT_ALPHA,
  DEFAULT_CLASSES_PER_SITE,
  DEFAULT_MIN_SIZE,
  PartitionOptions,
} from './partition';

/** PARTITION_MANIFEST_FILE is written in the output directory and describes the split. */
export const PARTITION_MANIFEST_FILE = 'partition.json';

/** TEST_DIR is the output subdirectory holding the shared held-out test split. */
export const TEST_DIR = 'test';

/** siteDirName names site i's directory: `site-0`, `site-1`, ... */
export function siteDirName(site: number): string {
  return `site-${site}`;
}

/** PartitionManifest is the content of `partition.json`. */
export interface PartitionManifest {
  scheme: PartitionOptions['scheme'];
  seed: number;
  /** Only for the schemes that use it. */
  alpha?: number;
  classesPerSite?: number;
  minSize?: number;
  numClasses: number;
  sampleShape: number[];
  /** The training split that was partitioned. */
  source: string;
  sites: { name: string; dir: string; count: number; classCounts: number[] }[];
  /** The held-out test split, written once for all sites; null when the source had none. */
  test: { dir: string; count: number; classCounts: number[]; source: string } | null;
}

/**
 * writePartition writes each site's share of `train` to `<out>/site-<i>/` as gzip IDX files
 * (`train-images-idx3-ubyte.gz`, `train-labels-idx1-ubyte.gz`) plus a `dataset.json` that
 * declares numClasses, so each site directory is itself a dataset directory for loadDataset,
 * even when a skewed split left a site without the highest classes.
 *
 * The test split is not partitioned: evaluation uses one shared held-out set, written once to
 * `<out>/test/` as `t10k-*` files (load it with `loadDataset(<out>/test, 'test')`). Site
 * directories hold no test split.
 *
 * `partition.json` in `out` records the options, the per-site and test per-class counts.
 *
 * `out` must be empty or absent, or hold an earlier partition: then that partition's site and
 * test directories are removed first, so no stale site from a larger split is left behind.
 */
export async function writePartition(
  out: string,
  train: Dataset,
  sites: Int32Array[],
  options: PartitionOptions,
  test?: Dataset,
): Promise<PartitionManifest> {
  const numClasses = Math.max(train.numClasses, test?.numClasses ?? 0);
  const metadata = JSON.stringify({ numClasses }, null, 2) + '\n';
  await clearOutput(out);

  const manifestSites: PartitionManifest['sites'] = [];
  for (const [i, indices] of sites.entries()) {
    const name = siteDirName(i);
    const dir = join(out, name);
    await writeIdxSplit(dir, 'train', train, indices);
    await writeFile(join(dir, DATASET_METADATA_FILE), metadata);
    const counts = classCounts(train.labels, numClasses, indices);
    manifestSites.push({ name, dir: name, count: indices.length, classCounts: counts });
  }

  let manifestTest: PartitionManifest['test'] = null;
  if (test !== undefined) {
    const dir = join(out, TEST_DIR);
    await writeIdxSplit(dir, 't10k', test);
    await writeFile(join(dir, DATASET_METADATA_FILE), metadata);
    const counts = classCounts(test.labels, numClasses);
    manifestTest = { dir: TEST_DIR, count: test.count, classCounts: counts, source: test.source };
  }

  const manifest: PartitionManifest = {
    scheme: options.scheme,
    seed: options.seed,
    ...schemeParameters(options),
    numClasses,
    sampleShape: train.sampleShape,
    source: train.source,
    sites: manifestSites,
    test: manifestTest,
  };
  await writeFile(join(out, PARTITION_MANIFEST_FILE), JSON.stringify(manifest, null, 2) + '\n');
  return manifest;
}

/** schemeParameters keeps only the options the scheme reads, so the manifest does not mislead. */
function schemeParameters(options: PartitionOptions): Partial<PartitionManifest> {
  switch (options.scheme) {
    case 'dirichlet':
    case 'quantity':
      return {
        alpha: options.alpha ?? DEFAULT_ALPHA,
        minSize: options.minSize ?? DEFAULT_MIN_SIZE,
      };
    case 'classes':
      return { classesPerSite: options.classesPerSite ?? DEFAULT_CLASSES_PER_SITE };
    case 'iid':
      return {};
  }
}

/** clearOutput makes `out` an empty directory, refusing to delete anything but a partition. */
async function clearOutput(out: string): Promise<void> {
  await mkdir(out, { recursive: true });
  const entries = await readdir(out);
  if (entries.length === 0) return;
  if (!entries.includes(PARTITION_MANIFEST_FILE)) {
    throw new DatasetError(
      out,
      `output directory is not empty and holds no ${PARTITION_MANIFEST_FILE}: ` +
        `expected an empty directory or an earlier partition`,
    );
  }
  const previous = JSON.parse(await readFile(join(out, PARTITION_MANIFEST_FILE), 'utf8')) as {
    sites?: { dir?: unknown }[];
  };
  const dirs = (previous.sites ?? []).map((site) => site.dir).filter((d) => typeof d === 'string');
  for (const dir of [...dirs, TEST_DIR]) {
    // Only plain names inside `out`: a manifest must not steer deletion elsewhere.
    if (/^[\w.-]+$/.test(dir) && dir !== '.' && dir !== '..') {
      await rm(join(out, dir), { recursive: true, force: true });
    }
  }
}
