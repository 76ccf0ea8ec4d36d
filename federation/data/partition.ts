import { SeededRandom } from '../random';

/**
 * Partitioners split one dataset's samples among simulated sites, following the label- and
 * quantity-skew settings of NIID-Bench (Li et al., "Federated Learning on Non-IID Data Silos:
 * An Experimental Study", 2021), so that results can be compared with that literature:
 *
 * - `iid`: shuffle, then split into `sites` parts whose sizes differ by at most one.
 * - `dirichlet`: label skew. For each class, draw proportions over sites from Dir(alpha) and
 *   deal out the class's samples accordingly; a site already holding its equal share (n/sites)
 *   gets no more. Redraw everything until every site has at least `minSize` samples.
 * - `classes` ("#C=k"): each site holds exactly `classesPerSite` distinct labels; the samples
 *   of a label are split evenly among the sites that hold it.
 * - `quantity`: site sizes are proportions drawn from Dir(alpha) (redrawn until every site has
 *   `minSize`), and labels are IID within each site.
 *
 * Every scheme is a pure function of (labels, options); every index appears in exactly one site.
 */

/** PartitionScheme names the ways `partition` can split a dataset. */
export type PartitionScheme = 'iid' | 'dirichlet' | 'classes' | 'quantity';

/** PARTITION_SCHEMES lists the schemes, for validation and help text. */
export const PARTITION_SCHEMES: readonly PartitionScheme[] = [
  'iid',
  'dirichlet',
  'classes',
  'quantity',
];

/** PartitionOptions says how to split; `seed` makes the split reproducible. */
export interface PartitionOptions {
  scheme: PartitionScheme;
  sites: number;
  /** Concentration of the Dirichlet draws for `dirichlet` and `quantity`; default 0.5. */
  alpha?: number;
  /** Labels per site for `classes`; default 2. */
  classesPerSite?: number;
  seed: number;
  /** Smallest site for `dirichlet` and `quantity`, reached by redrawing; default 10. */
  minSize?: number;
}

/** DEFAULT_ALPHA, DEFAULT_CLASSES_PER_SITE and DEFAULT_MIN_SIZE are NIID-Bench's usual values. */
export const DEFAULT_ALPHA = 0.5;
export const DEFAULT_CLASSES_PER_SITE = 2;
export const DEFAULT_MIN_SIZE = 10;

/** How many complete redraws `dirichlet` and `quantity` try before giving up on minSize. */
const MAX_DRAWS = 1000;

/**
 * PartitionOptionError says which option was wrong; the CLI turns `option` into its flag name.
 */
export class PartitionOptionError extends Error {
  constructor(
    readonly option: keyof PartitionOptions,
    readonly problem: string,
  ) {
    super(`${option}: ${problem}`);
    this.name = 'PartitionOptionError';
  }
}

/**
 * partition splits the samples whose labels are given into `options.sites` lists of sample
 * indices, deterministically for `options.seed`. Labels must lie in [0, numClasses).
 */
export function partition(
  labels: Int32Array,
  numClasses: number,
  options: PartitionOptions,
): Int32Array[] {
  const resolved = resolveOptions(labels.length, numClasses, options);
  const random = new SeededRandom(options.seed);
  let sites: number[][];
  switch (options.scheme) {
    case 'iid':
      sites = splitEvenly(random.shuffle(range(labels.length)), options.sites);
      break;
    case 'dirichlet':
      sites = dirichletLabelSkew(labels, numClasses, resolved, random);
      break;
    case 'classes':
      sites = classesPerSite(labels, numClasses, resolved, random);
      break;
    case 'quantity':
      sites = quantitySkew(labels.length, resolved, random);
      break;
  }
  return sites.map((indices) => Int32Array.from(indices));
}

type ResolvedOptions = Required<PartitionOptions>;

/** resolveOptions fills defaults and rejects options no split can satisfy. */
function resolveOptions(
  count: number,
  numClasses: number,
  options: PartitionOptions,
): ResolvedOptions {
  const resolved: ResolvedOptions = {
    alpha: DEFAULT_ALPHA,
    classesPerSite: DEFAULT_CLASSES_PER_SITE,
    minSize: DEFAULT_MIN_SIZE,
    ...options,
  };
  const { scheme, sites, alpha, classesPerSite: k, seed, minSize } = resolved;
  if (!PARTITION_SCHEMES.includes(scheme)) {
    throw new PartitionOptionError(
      'scheme',
      `must be one of ${PARTITION_SCHEMES.join(', ')}, got ${JSON.stringify(scheme)}`,
    );
  }
  if (!Number.isInteger(sites) || sites < 1) {
    throw new PartitionOptionError('sites', `must be an integer >= 1, got ${sites}`);
  }
  if (sites > count) {
    throw new PartitionOptionError('sites', `must be <= the ${count} samples, got ${sites}`);
  }
  // SeededRandom keeps 32 bits of the seed; a larger one would silently alias a smaller one.
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) {
    throw new PartitionOptionError('seed', `must be an integer in 0..4294967295, got ${seed}`);
  }
  const drawsSizes = scheme === 'dirichlet' || scheme === 'quantity';
  if (drawsSizes && !(alpha > 0 && Number.isFinite(alpha))) {
    throw new PartitionOptionError('alpha', `must be > 0, got ${alpha}`);
  }
  if (drawsSizes && (!Number.isInteger(minSize) || minSize < 0)) {
    throw new PartitionOptionError('minSize', `must be an integer >= 0, got ${minSize}`);
  }
  if (drawsSizes && minSize * sites > count) {
    throw new PartitionOptionError(
      'minSize',
      `${sites} sites of at least ${minSize} samples need ${minSize * sites}, ` +
        `the dataset has ${count}`,
    );
  }
  if (scheme === 'classes') {
    if (!Number.isInteger(k) || k < 1 || k > numClasses) {
      throw new PartitionOptionError(
        'classesPerSite',
        `must be an integer in 1..${numClasses} (the number of classes), got ${k}`,
      );
    }
    if (k * sites < numClasses) {
      throw new PartitionOptionError(
        'classesPerSite',
        `${sites} sites × ${k} classes cannot hold all ${numClasses} classes; ` +
          `need sites × classesPerSite >= ${numClasses}`,
      );
    }
  }
  return resolved;
}

/** dirichletLabelSkew is NIID-Bench's `noniid-labeldir`. */
function dirichletLabelSkew(
  labels: Int32Array,
  numClasses: number,
  options: ResolvedOptions,
  random: SeededRandom,
): number[][] {
  const byClass = indicesByClass(labels, numClasses);
  const equalShare = labels.length / options.sites;
  let smallest = 0;
  for (let draw = 0; draw < MAX_DRAWS; draw++) {
    const sites: number[][] = Array.from({ length: options.sites }, () => []);
    for (const members of byClass) {
      const shuffled = random.shuffle(members.slice());
      let proportions = random.dirichlet(options.alpha, options.sites);
      // A site that already has its equal share takes no more, which keeps sizes in check.
      const capped = proportions.map((p, j) => (sites[j].length < equalShare ? p : 0));
      const total = capped.reduce((a, b) => a + b, 0);
      if (total > 0) proportions = capped.map((p) => p / total);
      cutByProportions(shuffled, proportions).forEach((part, j) => append(sites[j], part));
    }
    smallest = Math.min(...sites.map((s) => s.length));
    if (smallest >= options.minSize) return sites.map((s) => random.shuffle(s));
  }
  throw new PartitionOptionError(
    'minSize',
    `no draw in ${MAX_DRAWS} gave every site ${options.minSize} samples (the last gave ` +
      `${smallest}); lower minSize or raise alpha`,
  );
}

/**
 * classesPerSite is NIID-Bench's `noniid-#label<k>`. Site i's first label is i mod
 * numClasses; its other labels are drawn at random. One deliberate change: the extra labels
 * are drawn first among labels that no site holds yet and that are not a later site's first
 * label, so that whenever sites × classesPerSite >= numClasses every class has a site and no
 * sample is left out (NIID-Bench drops the samples of labels nobody picked).
 */
function classesPerSite(
  labels: Int32Array,
  numClasses: number,
  options: ResolvedOptions,
  random: SeededRandom,
): number[][] {
  const holders = new Array<number>(numClasses).fill(0);
  const reserved = new Set(range(options.sites).map((site) => site % numClasses));
  const held: number[][] = [];
  for (let site = 0; site < options.sites; site++) {
    const mine = [site % numClasses];
    holders[site % numClasses]++;
    reserved.delete(site % numClasses);
    while (mine.length < options.classesPerSite) {
      const free = range(numClasses).filter((c) => !mine.includes(c));
      const unheld = free.filter((c) => holders[c] === 0);
      const preferred = unheld.filter((c) => !reserved.has(c));
      const pool = preferred.length > 0 ? preferred : unheld.length > 0 ? unheld : free;
      const label = pool[random.int(pool.length)];
      mine.push(label);
      holders[label]++;
    }
    held.push(mine);
  }

  const sites: number[][] = Array.from({ length: options.sites }, () => []);
  indicesByClass(labels, numClasses).forEach((members, label) => {
    if (holders[label] === 0) return;
    const parts = splitEvenly(random.shuffle(members.slice()), holders[label]);
    let next = 0;
    held.forEach((mine, site) => {
      if (mine.includes(label)) append(sites[site], parts[next++]);
    });
  });
  return sites;
}

/** quantitySkew is NIID-Bench's `iid-diff-quantity`. */
function quantitySkew(count: number, options: ResolvedOptions, random: SeededRandom): number[][] {
  const order = random.shuffle(range(count));
  let smallest = 0;
  for (let draw = 0; draw < MAX_DRAWS; draw++) {
    const sites = cutByProportions(order, random.dirichlet(options.alpha, options.sites));
    smallest = Math.min(...sites.map((s) => s.length));
    if (smallest >= options.minSize) return sites;
  }
  throw new PartitionOptionError(
    'minSize',
    `no draw in ${MAX_DRAWS} gave every site ${options.minSize} samples (the last gave ` +
      `${smallest}); lower minSize or raise alpha`,
  );
}

/**
 * cutByProportions splits `items` into consecutive parts, cutting at floor(cumulative
 * proportion × length) as NumPy's `(cumsum(p) * n).astype(int)` does; the last part takes
 * the rest.
 */
function cutByProportions(items: number[], proportions: number[]): number[][] {
  const parts: number[][] = [];
  let start = 0;
  let cumulative = 0;
  proportions.forEach((p, j) => {
    cumulative += p;
    const end =
      j === proportions.length - 1
        ? items.length
        : Math.min(items.length, Math.floor(cumulative * items.length));
    parts.push(items.slice(start, Math.max(start, end)));
    start = Math.max(start, end);
  });
  return parts;
}

/** splitEvenly splits into `parts` consecutive pieces, the first (n mod parts) one larger. */
function splitEvenly(items: number[], parts: number): number[][] {
  const base = Math.floor(items.length / parts);
  const larger = items.length % parts;
  const out: number[][] = [];
  let start = 0;
  for (let i = 0; i < parts; i++) {
    const size = base + (i < larger ? 1 : 0);
    out.push(items.slice(start, start + size));
    start += size;
  }
  return out;
}

function indicesByClass(labels: Int32Array, numClasses: number): number[][] {
  const byClass: number[][] = Array.from({ length: numClasses }, () => []);
  labels.forEach((label, i) => {
    if (label < 0 || label >= numClasses) {
      throw new RangeError(`labels[${i}]: must be in 0..${numClasses - 1}, got ${label}`);
    }
    byClass[label].push(i);
  });
  return byClass;
}

/** append adds items one by one: a spread of a large class would overflow the call stack. */
function append(target: number[], items: number[]): void {
  for (const item of items) target.push(item);
}

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}
