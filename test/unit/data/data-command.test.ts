import { mkdtemp, readFile, rm } from 'fs/promises';
import { tmpdir } from 'os';
import { join } from 'path';
import { main } from '../../../operator/cli/main';
import { Dataset, loadDataset } from '../../../federation/data/dataset';
import { writeIdxSplit } from '../../../federation/data/idx-writer';
import { PartitionManifest } from '../../../federation/data/partition-writer';

/** tinyImages makes n 4x4 byte images with labels cycling over 10 classes. */
function tinyImages(n: number): Dataset {
  return {
    features: Float32Array.from({ length: n * 16 }, (_, i) => ((i * 13) % 256) / 255),
    sampleShape: [1, 4, 4],
    labels: Int32Array.from({ length: n }, (_, i) => (i * 3) % 10),
    numClasses: 10,
    count: n,
    source: 'made in the test',
  };
}

let work: string;
let source: string;
let printed: string;

beforeEach(async () => {
  work = await mkdtemp(join(tmpdir(), 'flotilla-data-cli-'));
  source = join(work, 'source');
  await writeIdxSplit(source, 'train', tinyImages(300));
  await writeIdxSplit(source, 't10k', tinyImages(50));
  printed = '';
  jest.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    printed += chunk.toString();
    return true;
  });
});

afterEach(async () => {
  jest.restoreAllMocks();
  await rm(work, { recursive: true, force: true });
});

function flotilla(...args: string[]): Promise<void> {
  return main(['node', 'flotilla', ...args]);
}

describe('flotilla data partition', () => {
  it('writes the sites and prints a per-site table with the shared test set', async () => {
    const out = join(work, 'sites');

    await flotilla(
      'data',
      'partition',
      '--data',
      source,
      '--out',
      out,
      '--sites',
      '4',
      '--scheme',
      'dirichlet',
      '--alpha',
      '0.5',
      '--seed',
      '1',
      '--min-size',
      '5',
    );

    const manifest = JSON.parse(
      await readFile(join(out, 'partition.json'), 'utf8'),
    ) as PartitionManifest;
    expect(manifest).toMatchObject({ scheme: 'dirichlet', alpha: 0.5, seed: 1, minSize: 5 });
    expect(manifest.sites.reduce((n, s) => n + s.count, 0)).toBe(300);
    expect(printed).toContain('into 4 sites (scheme dirichlet, alpha 0.5, min size 5, seed 1)');
    for (const site of manifest.sites) {
      const row = [site.name, site.count, site.classCounts.filter((c) => c > 0).length];
      expect(printed).toMatch(
        new RegExp(`^${row.join('\\s+')}\\s+${site.classCounts.join('\\s+')}$`, 'm'),
      );
      expect((await loadDataset(join(out, site.dir), 'train')).count).toBe(site.count);
    }
    expect(printed).toMatch(/^test \(shared\)\s+50\s+10\s/m);
    expect((await loadDataset(join(out, 'test'), 'test')).count).toBe(50);
  });

  it('gives each site exactly --classes-per-site labels with --scheme classes', async () => {
    const out = join(work, 'sites');

    await flotilla(
      'data',
      'partition',
      '--data',
      source,
      '--out',
      out,
      '--sites',
      '5',
      '--scheme',
      'classes',
      '--classes-per-site',
      '2',
      '--seed',
      '4',
    );

    const manifest = JSON.parse(
      await readFile(join(out, 'partition.json'), 'utf8'),
    ) as PartitionManifest;
    expect(manifest.sites.map((s) => s.classCounts.filter((c) => c > 0).length)).toEqual([
      2, 2, 2, 2, 2,
    ]);
  });

  it.each([
    [['--alpha', '-1', '--scheme', 'dirichlet'], '--alpha: must be > 0, got -1'],
    [['--alpha', 'lots'], '--alpha: must be > 0, got lots'],
    [
      ['--scheme', 'pathological'],
      '--scheme: must be one of iid, dirichlet, classes, quantity, got "pathological"',
    ],
    [['--classes-per-site', '0'], '--classes-per-site: must be an integer >= 1, got 0'],
    [['--seed', '1.5'], '--seed: must be an integer >= 0, got 1.5'],
    [['--seed', '4294967296'], '--seed: must be an integer in 0..4294967295, got 4294967296'],
    [
      ['--scheme', 'classes', '--classes-per-site', '11'],
      '--classes-per-site: must be an integer in 1..10',
    ],
    [
      ['--scheme', 'quantity', '--sites', '40'],
      '--min-size: 40 sites of at least 10 samples need 400',
    ],
  ])('rejects %j naming the flag and the value', async (extra, message) => {
    const run = flotilla(
      'data',
      'partition',
      '--data',
      source,
      '--out',
      join(work, 'sites'),
      '--sites',
      '4',
      ...extra,
    );

    await expect(run).rejects.toThrow(message);
  });

  it('names the data directory when it holds no dataset', async () => {
    const run = flotilla(
      'data',
      'partition',
      '--data',
      work,
      '--out',
      join(work, 'o'),
      '--sites',
      '2',
    );

    await expect(run).rejects.toThrow(`${work}: no known layout for the train split`);
  });
});

describe('flotilla data inspect', () => {
  it('prints each split with its shape and per-class counts', async () => {
    await flotilla('data', 'inspect', source);

    expect(printed).toContain('train: 300 samples of shape [1, 4, 4], 10 classes');
    expect(printed).toContain('test: 50 samples of shape [1, 4, 4], 10 classes');
    expect(printed).toMatch(
      /^train\s+300\s+10\s+30\s+30\s+30\s+30\s+30\s+30\s+30\s+30\s+30\s+30$/m,
    );
    expect(printed).toMatch(/^test\s+50\s+10\s+5\s+5\s+5\s+5\s+5\s+5\s+5\s+5\s+5\s+5$/m);
  });

  it('shows a missing test split as none', async () => {
    const out = join(work, 'sites');
    await flotilla('data', 'partition', '--data', source, '--out', out, '--sites', '2');
    printed = '';

    await flotilla('data', 'inspect', join(out, 'site-0'));

    expect(printed).toContain('train: 150 samples');
    expect(printed).toContain('test: none');
  });
});
