/**
 * The operator's lifecycle rules on the local control plane, with two operator replicas: only
 * the Lease holder reconciles and the other takes over when it goes; a suspended job stops
 * after its round and resumes where it stood; the active deadline fails a job and stops its
 * pods; a finished job with a TTL is deleted.
 */
import * as fs from 'node:fs';
import { ensureCluster, helm, kubectl, waitFor } from '../cluster/kubectl';
import {
  eventReasons,
  getJob,
  installOperator,
  jobManifest,
  jobPods,
  prepareSites,
  waitForPhase,
  waitForRound,
} from './operator-fixture';

jest.setTimeout(420_000);

const id = Date.now().toString(36);
const namespace = `e2e-oplife-${id}`;
const release = `fl-${id}`;
const operatorPods = `app.kubernetes.io/instance=${release},app.kubernetes.io/component=operator`;
let data: string;

beforeAll(async () => {
  ensureCluster();
  data = await prepareSites(3000);
  await installOperator(release, namespace, ['replicaCount=2']);
});

afterAll(async () => {
  await helm(['uninstall', release, '--namespace', namespace, '--wait', '--timeout', '1m']).catch(
    () => undefined,
  );
  await kubectl(['delete', 'namespace', namespace, '--wait=false', '--ignore-not-found']);
  fs.rmSync(data, { recursive: true, force: true });
});

async function leaseHolder(): Promise<string | undefined> {
  const lease = JSON.parse(
    await kubectl(['-n', namespace, 'get', 'lease', 'flotilla-operator-leader', '-o', 'json']),
  ) as { spec?: { holderIdentity?: string } };
  return lease.spec?.holderIdentity || undefined;
}

async function create(manifest: object): Promise<void> {
  await kubectl(['-n', namespace, 'apply', '-f', '-'], JSON.stringify(manifest));
}

async function patchSpec(name: string, spec: object): Promise<void> {
  await kubectl([
    '-n',
    namespace,
    'patch',
    'fedjob',
    name,
    '--type=merge',
    '-p',
    JSON.stringify({ spec }),
  ]);
}

test('of two operator replicas one holds the Lease, and the other takes over when it goes', async () => {
  const pods = (await kubectl(['-n', namespace, 'get', 'pods', '-l', operatorPods, '-o', 'name']))
    .trim()
    .split('\n')
    .map((p) => p.replace('pod/', ''));
  expect(pods).toHaveLength(2);
  const first = await waitFor('a Lease holder', leaseHolder);
  expect(pods).toContain(first);

  await kubectl(['-n', namespace, 'delete', 'pod', first, '--wait=false']);
  // The leader gives the Lease up as it stops; the standby or the Deployment's new pod takes it.
  const next = await waitFor('another Lease holder', async () => {
    const holder = await leaseHolder();
    return holder && holder !== first ? holder : undefined;
  });
  const now = await kubectl(['-n', namespace, 'get', 'pods', '-l', operatorPods, '-o', 'name']);
  expect(now).toContain(`pod/${next}`);

  await create(jobManifest({ name: 'after-failover', dataDir: data }));
  const job = await waitForPhase(namespace, 'after-failover', 'Succeeded');
  expect(job.status!.roundProgress).toBe('3/3');
});

test('a suspended job stops after its round, drops its trainers, and resumes where it stood', async () => {
  await create(jobManifest({ name: 'pause', dataDir: data, model: 'mlp', rounds: 6 }));
  await waitForRound(namespace, 'pause', 2);

  await patchSpec('pause', { suspend: true });
  const suspended = await waitForPhase(namespace, 'pause', 'Suspended');
  const roundAtSuspend = suspended.status!.history?.length ?? 0;
  expect(roundAtSuspend).toBeLessThan(6);
  await waitFor('the trainer pods to go', async () => {
    const pods = await jobPods(namespace, 'pause');
    const roles = pods.map((p) => p.metadata.labels?.['flotilla.dev/role']);
    return roles.includes('trainer') ? undefined : roles;
  });
  expect(suspended.status!.conditions!.find((c) => c.type === 'Suspended')?.status).toBe('True');

  await patchSpec('pause', { suspend: false });
  const job = await waitForPhase(namespace, 'pause', 'Succeeded');
  expect(job.status!.history!.map((h) => h.round)).toEqual([1, 2, 3, 4, 5, 6]);
  const reasons = await eventReasons(namespace, 'pause');
  expect(reasons).toEqual(expect.arrayContaining(['Suspended', 'Resumed', 'JobSucceeded']));
  expect(reasons).not.toContain('SiteReplaced');
});

test('a job past spec.activeDeadlineSeconds fails with DeadlineExceeded and its pods stop', async () => {
  const manifest = jobManifest({ name: 'late', dataDir: data, model: 'mlp', rounds: 50 }) as {
    spec: Record<string, unknown>;
  };
  manifest.spec.activeDeadlineSeconds = 5;
  await create(manifest);

  const job = await waitForPhase(namespace, 'late', 'Failed');
  const failed = job.status!.conditions!.find((c) => c.type === 'Failed');
  expect(failed).toMatchObject({ status: 'True', reason: 'DeadlineExceeded' });
  await waitFor('the pods of late to stop', async () => {
    const pods = await jobPods(namespace, 'late');
    return pods.every((p) => p.status?.phase !== 'Running') ? true : undefined;
  });
  expect(await eventReasons(namespace, 'late')).toContain('DeadlineExceeded');
});

test('a finished job with ttlSecondsAfterFinished is deleted with what it owns', async () => {
  const manifest = jobManifest({ name: 'short-lived', dataDir: data }) as {
    spec: Record<string, unknown>;
  };
  manifest.spec.ttlSecondsAfterFinished = 2;
  await create(manifest);
  await waitForPhase(namespace, 'short-lived', 'Succeeded');

  await waitFor('short-lived to be deleted', async () => {
    try {
      await getJob(namespace, 'short-lived');
      return undefined;
    } catch (err) {
      return /NotFound|not found/.test(String(err)) ? true : undefined;
    }
  });
});
