import { Command } from 'commander';
import { join } from 'path';
import { Dataset, loadDataset, Split } from '../../federation/data/dataset';
import { NoDatasetLayoutError } from '../../federation/data/dataset-error';
import { classCounts } from '../../federation/data/labels';
import {
  DEFAULT_ALPHA,
  DEFAULT_CLASSES_PER_SITE,
  DEFAULT_MIN_SIZE,
  partition,
  PARTITION_SCHEMES,
  PartitionOptionError,
  PartitionOptions,
  PartitionScheme,
} from '../../federation/data/partition';
import {
  PARTITION_MANIFEST_FILE,
  PartitionManifest,
  writePartition,
} from '../../federation/data/partition-writer';
import { createLogger } from '../../federation/log';

/** PartitionFlags are the `flotilla data partition` options as commander hands them over. */
export interface PartitionFlags {
  data: string;
  out: string;
  sites: string;
  scheme: string;
  alpha: string;
  classesPerSite: string;
  seed: string;
  minSize: string;
}

/** FLAG_NAMES maps each partition option to the flag a user typed, for error messages. */
const FLAG_NAMES: Record<keyof PartitionOptions, string> = {
  scheme: '--scheme',
  sites: '--sites',
  alpha: '--alpha',
  classesPerSite: '--classes-per-site',
  seed: '--seed',
  minSize: '--min-size',
};

/** Per-class columns are printed only up to this many classes, to keep the table readable. */
const MAX_CLASS_COLUMNS = 20;

/** register adds `flotilla data partition` and `flotilla data inspect`. */
export function register(program: Command): void {
  const data = program
    .command('data')
    .description('Inspect datasets and split them into per-site datasets for simulations');
  const print = (text: string) => process.stdout.write(text);

  data
    .command('partition')
    .description(
      'Split a dataset directory into per-site directories (gzip IDX) following NIID-Bench: ' +
        'iid, dirichlet label skew, #C classes per site, or quantity skew',
    )
    .requiredOption('--data <dir>', 'dataset directory (IDX, NPY or CSV layout)')
    .requiredOption('--out <dir>', 'output directory: site-<i>/, test/ and partition.json')
    .requiredOption('--sites <n>', 'number of sites')
    .option('--scheme <scheme>', `one of ${PARTITION_SCHEMES.join(', ')}`, 'iid')
    .option('--alpha <a>', 'Dirichlet concentration (dirichlet, quantity)', String(DEFAULT_ALPHA))
    .option('--classes-per-site <k>', 'labels per site (classes)', String(DEFAULT_CLASSES_PER_SITE))
    .option('--seed <n>', 'seed of the split', '0')
    .option('--min-size <n>', 'smallest site (dirichlet, quantity)', String(DEFAULT_MIN_SIZE))
    .action(async (flags: PartitionFlags) => {
      await partitionCommand(flags, print);
    });

  data
    .command('inspect')
    .description('Print the samples per split and per class of a dataset directory')
    .argument('<dir>', 'dataset directory')
    .action(async (dir: string) => {
      await inspectCommand(dir, print);
    });
}

/**
 * partitionCommand reads the train split (and the test split when there is one), partitions
 * the train split, writes it under `flags.out` and prints a per-site summary.
 */
export async function partitionCommand(
  flags: PartitionFlags,
  print: (text: string) => void,
): Promise<PartitionManifest> {
  const options = parsePartitionFlags(flags);
  const train = await timedLoad(flags.data, 'train');
  const test = await loadIfPresent(flags.data, 'test');

  let sites: Int32Array[];
  try {
    sites = partition(train.labels, train.numClasses, options);
  } catch (err) {
    if (err instanceof PartitionOptionError) {
      throw new Error(`${FLAG_NAMES[err.option]}: ${err.problem}`);
    }
    throw err;
  }
  const manifest = await writePartition(flags.out, train, sites, options, test);

  print(
    `Partitioned ${train.source}: ${train.count} samples, ${manifest.numClasses} classes, ` +
      `into ${manifest.sites.length} sites (${describeScheme(manifest)})\n\n`,
  );
  const rows = manifest.sites.map((s) => ({ name: s.name, count: s.count, counts: s.classCounts }));
  if (manifest.test !== null) {
    rows.push({
      name: 'test (shared)',
      count: manifest.test.count,
      counts: manifest.test.classCounts,
    });
  }
  print(countTable(rows, manifest.numClasses));
  print(`\nWrote ${join(flags.out, PARTITION_MANIFEST_FILE)}\n`);
  return manifest;
}

/** inspectCommand prints, for each split the directory holds, its samples per class. */
export async function inspectCommand(dir: string, print: (text: string) => void): Promise<void> {
  const splits: [Split, Dataset | undefined][] = [
    ['train', await loadIfPresent(dir, 'train')],
    ['test', await loadIfPresent(dir, 'test')],
  ];
  if (splits.every(([, ds]) => ds === undefined)) {
    await loadDataset(dir, 'train'); // throws the error that lists the layouts looked for
  }
  const numClasses = Math.max(...splits.map(([, ds]) => ds?.numClasses ?? 0));
  for (const [split, ds] of splits) {
    if (ds === undefined) {
      print(`${split}: none\n`);
      continue;
    }
    print(
      `${split}: ${ds.count} samples of shape [${ds.sampleShape.join(', ')}], ` +
        `${ds.numClasses} classes, from ${ds.source}\n`,
    );
  }
  const rows = splits
    .filter((entry): entry is [Split, Dataset] => entry[1] !== undefined)
    .map(([split, ds]) => ({
      name: split,
      count: ds.count,
      counts: classCounts(ds.labels, numClasses),
    }));
  print('\n' + countTable(rows, numClasses));
}

/** parsePartitionFlags checks each flag and names it, with the value seen, when it is wrong. */
export function parsePartitionFlags(flags: PartitionFlags): PartitionOptions {
  if (!PARTITION_SCHEMES.includes(flags.scheme as PartitionScheme)) {
    throw new Error(
      `--scheme: must be one of ${PARTITION_SCHEMES.join(', ')}, got ${JSON.stringify(flags.scheme)}`,
    );
  }
  const alpha = Number(flags.alpha);
  if (flags.alpha.trim() === '' || !(alpha > 0) || !Number.isFinite(alpha)) {
    throw new Error(`--alpha: must be > 0, got ${flags.alpha}`);
  }
  return {
    scheme: flags.scheme as PartitionScheme,
    sites: parseInteger('--sites', flags.sites, 1),
    alpha,
    classesPerSite: parseInteger('--classes-per-site', flags.classesPerSite, 1),
    seed: parseInteger('--seed', flags.seed, 0),
    minSize: parseInteger('--min-size', flags.minSize, 0),
  };
}

function parseInteger(flag: string, text: string, min: number): number {
  const value = Number(text);
  if (text.trim() === '' || !Number.isSafeInteger(value) || value < min) {
    throw new Error(`${flag}: must be an integer >= ${min}, got ${text}`);
  }
  return value;
}

function describeScheme(manifest: PartitionManifest): string {
  const parts = [`scheme ${manifest.scheme}`];
  if (manifest.alpha !== undefined) parts.push(`alpha ${manifest.alpha}`);
  if (manifest.classesPerSite !== undefined) parts.push(`${manifest.classesPerSite} classes/site`);
  if (manifest.minSize !== undefined) parts.push(`min size ${manifest.minSize}`);
  parts.push(`seed ${manifest.seed}`);
  return parts.join(', ');
}

/** countTable lays out samples, distinct classes and per-class counts, one row per entry. */
function countTable(
  rows: { name: string; count: number; counts: number[] }[],
  numClasses: number,
): string {
  const perClass = numClasses <= MAX_CLASS_COLUMNS;
  const header = ['', 'samples', 'classes', ...(perClass ? classNames(numClasses) : [])];
  const body = rows.map((r) => [
    r.name,
    String(r.count),
    String(r.counts.filter((c) => c > 0).length),
    ...(perClass ? r.counts.map(String) : []),
  ]);
  const table = [header, ...body];
  const widths = header.map((_, c) => Math.max(...table.map((row) => row[c].length)));
  return (
    table
      .map((row) =>
        row
          .map((cell, c) => (c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c])))
          .join('  '),
      )
      .join('\n') + '\n'
  );
}

function classNames(numClasses: number): string[] {
  return Array.from({ length: numClasses }, (_, c) => `c${c}`);
}

/** loadIfPresent reads a split, or returns undefined when the directory has no layout for it. */
async function loadIfPresent(dir: string, split: Split): Promise<Dataset | undefined> {
  try {
    return await timedLoad(dir, split);
  } catch (err) {
    if (err instanceof NoDatasetLayoutError) return undefined;
    throw err;
  }
}

async function timedLoad(dir: string, split: Split): Promise<Dataset> {
  const started = Date.now();
  const dataset = await loadDataset(dir, split);
  createLogger('data').debug(
    { dir, split, count: dataset.count, durationMs: Date.now() - started },
    'dataset loaded',
  );
  return dataset;
}
