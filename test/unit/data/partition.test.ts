import {
  partition,
  PartitionOptionError,
  PartitionOptions,
} from '../../../federation/data/partition';
import { classCounts } from '../../../federation/data/labels';
import { SeededRandom } from '../../../federation/random';

const NUM_CLASSES = 10;
/** 5000 samples, 500 of each class, in a scrambled but fixed order. */
const labels = Int32Array.from({ length: 5000 }, (_, i) => (i * 7 + Math.floor(i / 10)) % 10);

function entropy(counts: number[]): number {
  const total = counts.reduce((a, b) => a + b, 0);
  return counts.reduce((h, c) => (c === 0 ? h : h - (c / total) * Math.log(c / total)), 0);
}

/** meanLabelEntropy is the average over sites of the entropy of each site's label mix. */
function meanLabelEntropy(sites: Int32Array[]): number {
  const each = sites.map((s) => entropy(classCounts(labels, NUM_CLASSES, s)));
  return each.reduce((a, b) => a + b, 0) / each.length;
}

function expectEveryIndexOnce(sites: Int32Array[], count: number): void {
  const seen = new Uint8Array(count);
  for (const site of sites) for (const i of site) seen[i]++;
  expect(Array.from(seen).every((n) => n === 1)).toBe(true);
}

const base = { sites: 10, seed: 1, alpha: 0.5, classesPerSite: 2 };
const schemes = ['iid', 'dirichlet', 'classes', 'quantity'] as const;

describe('SeededRandom', () => {
  it('repeats its sequence for a seed and changes it with the seed', () => {
    const a = new SeededRandom(42);
    const b = new SeededRandom(42);
    const c = new SeededRandom(43);
    const seqA = Array.from({ length: 5 }, () => a.nextUint32());
    expect(Array.from({ length: 5 }, () => b.nextUint32())).toEqual(seqA);
    expect(Array.from({ length: 5 }, () => c.nextUint32())).not.toEqual(seqA);
  });

  it('draws Gamma samples whose mean is the shape, for shapes below and above 1', () => {
    const random = new SeededRandom(7);
    for (const shape of [0.3, 1, 4.5]) {
      let sum = 0;
      for (let i = 0; i < 20000; i++) sum += random.gamma(shape);
      expect(sum / 20000).toBeCloseTo(shape, 1);
    }
  });

  it('draws Dirichlet proportions that sum to 1, even for a tiny alpha', () => {
    const random = new SeededRandom(3);
    for (const alpha of [0.001, 0.5, 100]) {
      const p = random.dirichlet(alpha, 10);
      expect(p.every((x) => x >= 0 && Number.isFinite(x))).toBe(true);
      expect(p.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 12);
    }
  });
});

describe('partition', () => {
  it.each(schemes)('%s: same seed gives the same split, another seed a different one', (scheme) => {
    const once = partition(labels, NUM_CLASSES, { ...base, scheme });
    const again = partition(labels, NUM_CLASSES, { ...base, scheme });
    const other = partition(labels, NUM_CLASSES, { ...base, scheme, seed: 2 });

    expect(again.map((s) => Array.from(s))).toEqual(once.map((s) => Array.from(s)));
    expect(other.map((s) => Array.from(s))).not.toEqual(once.map((s) => Array.from(s)));
  });

  it.each(schemes)('%s: uses every index exactly once across the sites', (scheme) => {
    const sites = partition(labels, NUM_CLASSES, { ...base, scheme });

    expect(sites).toHaveLength(10);
    expectEveryIndexOnce(sites, labels.length);
  });

  it('iid: sizes differ by at most one and every site sees a near-uniform label mix', () => {
    const sites = partition(labels, NUM_CLASSES, { scheme: 'iid', sites: 7, seed: 5 });

    const sizes = sites.map((s) => s.length);
    expect(Math.max(...sizes) - Math.min(...sizes)).toBeLessThanOrEqual(1);
    expect(meanLabelEntropy(sites)).toBeGreaterThan(0.98 * Math.log(NUM_CLASSES));
  });

  it('dirichlet: small alpha skews each site toward few labels, large alpha is near uniform', () => {
    const skewed = partition(labels, NUM_CLASSES, { ...base, scheme: 'dirichlet', alpha: 0.1 });
    const mild = partition(labels, NUM_CLASSES, { ...base, scheme: 'dirichlet', alpha: 1 });
    const uniform = partition(labels, NUM_CLASSES, { ...base, scheme: 'dirichlet', alpha: 100 });

    const maxEntropy = Math.log(NUM_CLASSES);
    expect(meanLabelEntropy(skewed)).toBeLessThan(0.6 * maxEntropy);
    expect(meanLabelEntropy(skewed)).toBeLessThan(meanLabelEntropy(mild));
    expect(meanLabelEntropy(mild)).toBeLessThan(meanLabelEntropy(uniform));
    expect(meanLabelEntropy(uniform)).toBeGreaterThan(0.95 * maxEntropy);
  });

  it('dirichlet: redraws until every site has minSize samples', () => {
    const sites = partition(labels, NUM_CLASSES, {
      ...base,
      scheme: 'dirichlet',
      alpha: 0.05,
      minSize: 100,
    });

    expect(Math.min(...sites.map((s) => s.length))).toBeGreaterThanOrEqual(100);
  });

  it.each([1, 2, 3, 10])('classes: every site holds exactly %i distinct labels', (k) => {
    const sites = partition(labels, NUM_CLASSES, { ...base, scheme: 'classes', classesPerSite: k });

    for (const site of sites) {
      expect(classCounts(labels, NUM_CLASSES, site).filter((c) => c > 0)).toHaveLength(k);
    }
  });

  it('classes: fewer sites than classes still covers every class', () => {
    const sites = partition(labels, NUM_CLASSES, {
      scheme: 'classes',
      sites: 5,
      classesPerSite: 2,
      seed: 11,
    });

    expectEveryIndexOnce(sites, labels.length);
    const held = sites.map((s) => classCounts(labels, NUM_CLASSES, s).filter((c) => c > 0));
    expect(held.every((h) => h.length === 2)).toBe(true);
  });

  it('quantity: site sizes vary while each large site keeps an IID label mix', () => {
    const sites = partition(labels, NUM_CLASSES, { ...base, scheme: 'quantity', alpha: 0.5 });

    const sizes = sites.map((s) => s.length);
    expect(Math.max(...sizes)).toBeGreaterThan(3 * Math.min(...sizes));
    expect(Math.min(...sizes)).toBeGreaterThanOrEqual(10);
    for (const site of sites.filter((s) => s.length >= 300)) {
      expect(entropy(classCounts(labels, NUM_CLASSES, site))).toBeGreaterThan(
        0.95 * Math.log(NUM_CLASSES),
      );
    }
  });

  it.each<[Partial<PartitionOptions>, string]>([
    [{ scheme: 'dirichlet', alpha: -1 }, 'alpha: must be > 0, got -1'],
    [{ scheme: 'quantity', alpha: 0 }, 'alpha: must be > 0, got 0'],
    [{ scheme: 'iid', sites: 0 }, 'sites: must be an integer >= 1, got 0'],
    [{ scheme: 'iid', sites: 6000 }, 'sites: must be <= the 5000 samples, got 6000'],
    [{ scheme: 'classes', classesPerSite: 11 }, 'classesPerSite: must be an integer in 1..10'],
    [{ scheme: 'classes', sites: 3, classesPerSite: 3 }, '3 sites × 3 classes cannot hold all 10'],
    [{ scheme: 'dirichlet', minSize: 600 }, 'minSize: 10 sites of at least 600 samples need 6000'],
    [{ scheme: 'iid', seed: 2 ** 32 }, 'seed: must be an integer in 0..4294967295, got 4294967296'],
    [{ scheme: 'bogus' as never }, 'scheme: must be one of iid, dirichlet, classes, quantity'],
  ])('rejects %j naming the option and the value', (override, message) => {
    const run = () => partition(labels, NUM_CLASSES, { ...base, scheme: 'iid', ...override });

    expect(run).toThrow(PartitionOptionError);
    expect(run).toThrow(message);
  });

  it('gives up with a clear error when no draw can reach minSize', () => {
    const run = () =>
      partition(labels, NUM_CLASSES, { ...base, scheme: 'quantity', alpha: 0.01, minSize: 490 });

    expect(run).toThrow(/minSize: no draw in 1000 gave every site 490 samples/);
  });
});
