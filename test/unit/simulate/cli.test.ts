import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const COMPILED = path.join(ROOT, 'dist', 'operator', 'cli', 'main.js');
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
});
