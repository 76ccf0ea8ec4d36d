import { mkdtemp, readdir, readFile, rm, writeFile } from 'fs/promises';
import { tmpdir } from 'os';
import { join } from 'path';
import { Dataset, loadDataset } from '../../../federation/data/dataset';
import { DatasetError } from '../../../federation/data/dataset-error';
import { partition, PartitionOptions } from '../../../federation/data/partition';
import { PartitionManifest, writePartition } from '../../../federation/data/partition-writer';

/** imageDataset makes n 1x3x2 images of bytes / 255 with labels cycling over 4 classes. */
function imageDataset(n: number, labelOf = (i: number) => i % 4): Dataset {
  return {
    features: Float32Array.from({ length: n * 6 }, (_, i) => ((i * 37) % 256) / 255),
    sampleShape: [1, 3, 2],
    labels: Int32Array.from({ length: n }, (_, i) => labelOf(i)),
    numClasses: 4,
    count: n,
    source: 'made in the test',
  };
}

function sample(ds: Dataset, i: number): number[] {
  const size = ds.sampleShape.reduce((a, b) => a * b, 1);
  return Array.from(ds.features.subarray(i * size, (i + 1) * size));
}

let out: string;
beforeEach(async () => {
  out = await mkdtemp(join(tmpdir(), 'flotilla-partition-'));
});
afterEach(async () => {
  await rm(out, { recursive: true, force: true });
});

describe('writePartition', () => {
  it('writes site directories that loadDataset reads back sample for sample', async () => {
    const train = imageDataset(200);
    const test = imageDataset(40);
    const options: PartitionOptions = {
      scheme: 'dirichlet',
      sites: 3,
      alpha: 0.3,
      seed: 9,
      minSize: 5,
    };
    const sites = partition(train.labels, train.numClasses, options);

    await writePartition(out, train, sites, options, test);

    for (const [s, indices] of sites.entries()) {
      const site = await loadDataset(join(out, `site-${s}`), 'train');
      expect(site.count).toBe(indices.length);
      expect(site.sampleShape).toEqual([1, 3, 2]);
      expect(site.numClasses).toBe(4);
      indices.forEach((original, i) => {
        expect(site.labels[i]).toBe(train.labels[original]);
        expect(sample(site, i)).toEqual(sample(train, original));
      });
    }
    const heldOut = await loadDataset(join(out, 'test'), 'test');
    expect(heldOut.count).toBe(40);
    expect(Array.from(heldOut.features)).toEqual(Array.from(test.features));
  });

  it('declares numClasses for a site that lacks the highest classes', async () => {
    const train = imageDataset(40, (i) => (i < 20 ? 0 : 3));
    const sites = [
      Int32Array.from({ length: 20 }, (_, i) => i),
      Int32Array.from({ length: 20 }, (_, i) => 20 + i),
    ];

    await writePartition(out, train, sites, {
      scheme: 'classes',
      sites: 2,
      classesPerSite: 1,
      seed: 0,
    });

    const first = await loadDataset(join(out, 'site-0'), 'train');
    expect(Array.from(new Set(first.labels))).toEqual([0]);
    expect(first.numClasses).toBe(4);
  });

  it('records scheme, seed and per-site per-class counts in partition.json', async () => {
    const train = imageDataset(100);
    const options: PartitionOptions = { scheme: 'classes', sites: 4, classesPerSite: 1, seed: 3 };
    const sites = partition(train.labels, train.numClasses, options);

    await writePartition(out, train, sites, options);

    const manifest = JSON.parse(
      await readFile(join(out, 'partition.json'), 'utf8'),
    ) as PartitionManifest;
    expect(manifest).toMatchObject({
      scheme: 'classes',
      seed: 3,
      classesPerSite: 1,
      numClasses: 4,
      test: null,
    });
    expect(manifest.sites.map((s) => s.dir)).toEqual(['site-0', 'site-1', 'site-2', 'site-3']);
    expect(manifest.sites.map((s) => s.classCounts)).toEqual([
      [25, 0, 0, 0],
      [0, 25, 0, 0],
      [0, 0, 25, 0],
      [0, 0, 0, 25],
    ]);
    expect(manifest.alpha).toBeUndefined();
  });

  it('keeps features that are not bytes exact by writing float32', async () => {
    const train: Dataset = {
      ...imageDataset(10),
      features: Float32Array.from({ length: 60 }, (_, i) => i * 0.1 - 2),
      sampleShape: [6],
    };

    await writePartition(out, train, [Int32Array.from({ length: 10 }, (_, i) => i)], {
      scheme: 'iid',
      sites: 1,
      seed: 0,
    });

    const site = await loadDataset(join(out, 'site-0'), 'train');
    expect(site.sampleShape).toEqual([6]);
    expect(Array.from(site.features)).toEqual(Array.from(train.features));
  });

  it('replaces an earlier partition, leaving no stale site behind', async () => {
    const train = imageDataset(100);
    const run = (sites: number) =>
      writePartition(out, train, partition(train.labels, 4, { scheme: 'iid', sites, seed: 1 }), {
        scheme: 'iid',
        sites,
        seed: 1,
      });

    await run(5);
    await run(2);

    expect((await readdir(out)).sort()).toEqual(['partition.json', 'site-0', 'site-1']);
  });

  it('refuses an output directory that holds something other than a partition', async () => {
    await writeFile(join(out, 'thesis.tex'), 'precious');
    const train = imageDataset(10);

    const err = await writePartition(out, train, [Int32Array.from([0])], {
      scheme: 'iid',
      sites: 1,
      seed: 0,
    }).catch((e: unknown) => e);

    expect(err).toBeInstanceOf(DatasetError);
    expect((err as Error).message).toContain('output directory is not empty');
    expect(await readdir(out)).toEqual(['thesis.tex']);
  });
});
