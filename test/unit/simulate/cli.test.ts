import { spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Aggregator } from '../../../federation/aggregator/aggregator';
import { buildZooModel } from '../../../federation/engine/zoo';
import { createLogger } from '../../../federation/log';
import { createJobCertificates, writeTlsDir } from '../../../federation/protocol/identity';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const COMPILED = path.join(ROOT, 'dist', 'operator', 'cli', 'main.js');
const FASHION_MNIST = process.env.FASHION_MNIST ?? '/usr/share/datasets/fashion-mnist';
const describeIfBuilt = fs.existsSync(COMPILED) ? describe : describe.skip;

function flotilla(...args: string[]) {
  return spawnSync(process.execPath, [path.join(ROOT, 'bin', 'flotilla.js'), ...args], {
    encoding: 'utf8',
  });
}

describeIfBuilt('flotilla simulate, aggregator and trainer commands', () => {
  test('simulate refuses a bad manifest with a message that names the field, and exits 1', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'flotilla-cli-'));
    const file = path.join(dir, 'job.yaml');
    fs.writeFileSync(
      file,
      [
        'apiVersion: flotilla.dev/v1alpha1',
        'kind: FederatedJob',
        'metadata: { name: bad }',
        'spec:',
        '  model: { zoo: logreg, inputShape: [4], numClasses: 2 }',
        '  sites: [{ name: a, data: . }, { name: b, data: . }, { name: Site_C, data: . }]',
        '  rounds: 1',
      ].join('\n'),
    );
    const run = flotilla('simulate', file, '--out', path.join(dir, 'out'));
    expect(run.status).toBe(1);
    expect(run.stderr).toContain(
      'spec.sites[2].name: must be a DNS label (lowercase letters, digits, dashes), got "Site_C"',
    );
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('the aggregator will not serve plain TCP without the development flag', () => {
    const example = path.join(ROOT, 'examples', 'fashion-mnist.yaml');
    const run = flotilla('aggregator', '--job', example, '--listen', '127.0.0.1:0');
    expect(run.status).toBe(1);
    expect(run.stderr).toContain(
      '--tls-dir: required (or --insecure-dev for plain TCP in development)',
    );
  });

  test('a trainer that cannot verify the aggregator certificate exits 1 and says why', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'flotilla-cli-'));
    const jobFile = path.join(dir, 'job.yaml');
    fs.writeFileSync(
      jobFile,
      [
        'apiVersion: flotilla.dev/v1alpha1',
        'kind: FederatedJob',
        'metadata: { name: tls-job }',
        'spec:',
        '  model: { zoo: logreg, inputShape: [1, 28, 28], numClasses: 10 }',
        `  sites: [{ name: a, data: ${FASHION_MNIST} }]`,
        '  rounds: 1',
      ].join('\n'),
    );
    const ours = await createJobCertificates('tls-job', ['a']);
    const foreign = await createJobCertificates('tls-job', ['a']);
    writeTlsDir(path.join(dir, 'site-a'), foreign.ca.cert, foreign.sites.a);
    const aggregator = new Aggregator({
      job: 'tls-job',
      initialModel: buildZooModel('logreg', { inputShape: [1, 28, 28], numClasses: 10, seed: 0 })
        .params,
      strategy: 'fedavg',
      tls: {
        ca: Buffer.from(ours.ca.cert),
        cert: Buffer.from(ours.aggregator.cert),
        key: Buffer.from(ours.aggregator.key),
      },
      logger: createLogger('aggregator', fs.createWriteStream('/dev/null')),
    });
    const port = await aggregator.listen('127.0.0.1:0');
    try {
      const trainer = spawn(
        process.execPath,
        [
          path.join(ROOT, 'bin', 'flotilla.js'),
          'trainer',
          '--job',
          jobFile,
          '--site',
          'a',
          '--aggregator',
          `127.0.0.1:${port}`,
          '--tls-dir',
          path.join(dir, 'site-a'),
          '--provider',
          'cpu',
          '--threads',
          '1',
        ],
        { stdio: ['ignore', 'ignore', 'pipe'] },
      );
      let stderr = '';
      trainer.stderr!.on('data', (d) => (stderr += String(d)));
      const code = await new Promise<number | null>((resolve) => trainer.on('exit', resolve));
      expect(code).toBe(1);
      expect(stderr).toMatch(/flotilla: cannot verify the aggregator's certificate: .*certificate/);
    } finally {
      aggregator.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
