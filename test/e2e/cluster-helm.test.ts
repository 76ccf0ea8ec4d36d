/**
 * Helm works against the local control plane unchanged: a chart installs, its Deployment's pod
 * runs on a node agent with its ConfigMap mounted, and uninstall removes what it created.
 */
import * as path from 'node:path';
import { clusterDir, ensureCluster, helm, kubectl, waitFor } from '../cluster/kubectl';

jest.setTimeout(240_000);

const namespace = `e2e-helm-${Date.now().toString(36)}`;
const chart = path.join(clusterDir, 'testdata', 'hello-chart');

beforeAll(() => {
  ensureCluster();
});

afterAll(async () => {
  await kubectl(['delete', 'namespace', namespace, '--wait=false', '--ignore-not-found']);
});

test('helm installs a chart whose pod becomes ready, then uninstalls every object of it', async () => {
  await helm([
    'install',
    'hello',
    chart,
    '--namespace',
    namespace,
    '--create-namespace',
    '--set',
    'message=installed by helm',
    '--wait',
    '--timeout',
    '3m',
  ]);

  const releases = JSON.parse(await helm(['list', '--namespace', namespace, '-o', 'json']));
  expect(releases).toEqual([expect.objectContaining({ name: 'hello', status: 'deployed' })]);
  const deployment = JSON.parse(
    await kubectl(['-n', namespace, 'get', 'deployment', 'hello', '-o', 'json']),
  );
  expect(deployment.status.readyReplicas).toBe(1);
  const output = await waitFor('the pod to print the mounted message', async () => {
    const text = await kubectl(['-n', namespace, 'logs', 'deployment/hello']);
    return text.includes('installed by helm') ? text : undefined;
  });
  expect(output.trim()).toBe('installed by helm');

  await helm(['uninstall', 'hello', '--namespace', namespace, '--wait', '--timeout', '2m']);
  const left = await kubectl([
    '-n',
    namespace,
    'get',
    'deployments,services,configmaps',
    '-l',
    'app.kubernetes.io/instance=hello',
    '-o',
    'name',
  ]);
  expect(left.trim()).toBe('');
  expect(JSON.parse(await helm(['list', '--namespace', namespace, '-o', 'json']))).toEqual([]);
});
