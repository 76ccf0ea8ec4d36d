/**
 * The operator on the local control plane: `helm install` runs it as a pod, a FederatedJob
 * applied with kubectl trains to the end with its accuracy in status, and the job survives a
 * killed trainer, a killed aggregator and a restarted operator without redoing any round.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { apply, ensureCluster, helm, kubectl, waitFor } from '../cluster/kubectl';
import {
  eventReasons,
  getJob,
  installOperator,
  jobManifest,
  jobPods,
  operatorLogs,
  prepareSites,
  waitForPhase,
  waitForRound,
} from './operator-fixture';

jest.setTimeout(420_000);

const id = Date.now().toString(36);
const namespace = `e2e-operator-${id}`;
const release = `fl-${id}`;
let small: string;
let larger: string;
const scratch: string[] = [];

beforeAll(async () => {
  ensureCluster();
  small = await prepareSites(1000);
  larger = await prepareSites(4000);
  scratch.push(small, larger);
  await installOperator(release, namespace);
});

afterAll(async () => {
  await helm(['uninstall', release, '--namespace', namespace, '--wait', '--timeout', '1m']).catch(
    () => undefined,
  );
  await kubectl(['delete', 'namespace', namespace, '--wait=false', '--ignore-not-found']);
  for (const dir of scratch) fs.rmSync(dir, { recursive: true, force: true });
});

test('an applied FederatedJob runs to Succeeded with its accuracy, rounds and conditions in status', async () => {
  await kubectl(
    ['-n', namespace, 'apply', '-f', '-'],
    JSON.stringify(jobManifest({ name: 'fmnist', dataDir: small })),
  );

  const job = await waitForPhase(namespace, 'fmnist', 'Succeeded');

  const status = job.status!;
  expect(status.roundProgress).toBe('3/3');
  expect(status.round).toBe(3);
  expect(status.history!.map((h) => h.round)).toEqual([1, 2, 3]);
  // Ten classes: chance is 0.1; three rounds of logistic regression get well past it.
  expect(status.metrics!.accuracy).toBeGreaterThan(0.5);
  expect(status.observedGeneration).toBe(job.metadata.generation);
  const succeeded = status.conditions!.find((c) => c.type === 'Succeeded');
  expect(succeeded).toMatchObject({ status: 'True', observedGeneration: job.metadata.generation });
  expect(status.sites!.map((s) => [s.name, s.phase, s.restarts])).toEqual([
    ['site-a', 'Finished', 0],
    ['site-b', 'Finished', 0],
  ]);
  for (const site of status.sites!) {
    expect(site.lastRound).toBe(3);
    expect(site.examples).toBeGreaterThan(0);
  }

  const table = await kubectl(['-n', namespace, 'get', 'fedjobs']);
  const [header, row] = table.trim().split('\n');
  expect(header.split(/\s+/)).toEqual([
    'NAME',
    'PHASE',
    'ROUND',
    'SITES',
    'ACCURACY',
    'LOSS',
    'AGE',
  ]);
  expect(row.split(/\s+/).slice(0, 3)).toEqual(['fmnist', 'Succeeded', '3/3']);

  const reasons = await eventReasons(namespace, 'fmnist');
  expect(reasons.filter((r) => r === 'RoundFinished')).toHaveLength(3);
  expect(reasons).toContain('JobSucceeded');

  // Figures for the report: creation to first round, and the operator's share of each round.
  const logs = await operatorLogs(namespace, release);
  const first = logs.find((l) => l.msg === 'first round started' && l.job === 'fmnist');
  const steps = logs
    .filter((l) => l.job === 'fmnist' && typeof l.msg === 'string')
    .slice(0, 12)
    .map((l) => `${String(l.time)} ${String(l.msg)}`);
  console.log(`created ${job.metadata.creationTimestamp}\n${steps.join('\n')}`);
  const rounds = logs.filter((l) => l.msg === 'round finished' && l.job === 'fmnist');
  console.log(
    `apply -> first round: ${String(first?.durationMs)} ms (creationTimestamp has 1 s resolution); ` +
      `per round [aggregator ms, operator ms]: ${JSON.stringify(rounds.map((r) => [r.durationMs, r.operatorMs]))}`,
  );
});

test('a trainer pod deleted mid-job is replaced and the job still succeeds', async () => {
  await apply({
    ...jobManifest({ name: 'trainer-kill', dataDir: larger, model: 'mlp', rounds: 5 }),
    metadata: { name: 'trainer-kill', namespace },
  });
  await waitForRound(namespace, 'trainer-kill', 2);

  await kubectl(['-n', namespace, 'delete', 'pod', 'trainer-kill-site-a-0', '--wait=false']);

  const job = await waitForPhase(namespace, 'trainer-kill', 'Succeeded');
  expect(job.status!.roundProgress).toBe('5/5');
  const siteA = job.status!.sites!.find((s) => s.name === 'site-a')!;
  expect(siteA).toMatchObject({ pod: 'trainer-kill-site-a-1', restarts: 1 });
  expect(await eventReasons(namespace, 'trainer-kill')).toContain('SiteReplaced');
});

test('a deleted aggregator pod is recreated and resumes from its checkpoint', async () => {
  const checkpoints = fs.mkdtempSync(path.join(os.tmpdir(), 'flotilla-e2e-ckpt-'));
  scratch.push(checkpoints);
  await apply({
    ...jobManifest({
      name: 'agg-kill',
      dataDir: larger,
      model: 'mlp',
      rounds: 5,
      checkpointDir: checkpoints,
    }),
    metadata: { name: 'agg-kill', namespace },
  });
  await waitForRound(namespace, 'agg-kill', 3);
  const before = (await jobPods(namespace, 'agg-kill')).find(
    (p) => p.metadata.name === 'agg-kill-aggregator',
  )!;

  await kubectl(['-n', namespace, 'delete', 'pod', 'agg-kill-aggregator', '--wait=false']);

  const job = await waitForPhase(namespace, 'agg-kill', 'Succeeded');
  expect(job.status!.history!.map((h) => h.round)).toEqual([1, 2, 3, 4, 5]);
  const after = (await jobPods(namespace, 'agg-kill')).find(
    (p) => p.metadata.name === 'agg-kill-aggregator',
  )!;
  expect(after.metadata.uid).not.toBe(before.metadata.uid);
  const log = await kubectl(['-n', namespace, 'logs', 'agg-kill-aggregator']);
  const resumed = log
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as { msg: string; round?: number })
    .find((l) => l.msg === 'resumed from checkpoint');
  expect(resumed?.round).toBeGreaterThanOrEqual(2);
});

test('a restarted operator carries the job on without redoing a round or replacing a pod', async () => {
  await apply({
    ...jobManifest({ name: 'op-restart', dataDir: larger, model: 'mlp', rounds: 5 }),
    metadata: { name: 'op-restart', namespace },
  });
  await waitForRound(namespace, 'op-restart', 2);
  const before = await jobPods(namespace, 'op-restart');
  const secretBefore = JSON.parse(
    await kubectl(['-n', namespace, 'get', 'secret', 'op-restart-tls', '-o', 'json']),
  );

  await kubectl([
    '-n',
    namespace,
    'delete',
    'pod',
    '-l',
    `app.kubernetes.io/instance=${release},app.kubernetes.io/component=operator`,
    '--wait=false',
  ]);

  const job = await waitForPhase(namespace, 'op-restart', 'Succeeded');
  expect(job.status!.history!.map((h) => h.round)).toEqual([1, 2, 3, 4, 5]);
  const after = await jobPods(namespace, 'op-restart');
  expect(after.map((p) => p.metadata.uid).sort()).toEqual(before.map((p) => p.metadata.uid).sort());
  const secretAfter = JSON.parse(
    await kubectl(['-n', namespace, 'get', 'secret', 'op-restart-tls', '-o', 'json']),
  );
  expect(secretAfter.metadata.uid).toBe(secretBefore.metadata.uid);
  // The aggregator started each round once: the new operator waited for the open round.
  const started = (await kubectl(['-n', namespace, 'logs', 'op-restart-aggregator']))
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as { msg: string; round?: number })
    .filter((l) => l.msg === 'round started')
    .map((l) => l.round);
  expect(started).toEqual([1, 2, 3, 4, 5]);
});

test('an invalid manifest is refused by the API server with the field named', async () => {
  const bad = jobManifest({ name: 'bad', dataDir: small }) as { spec: Record<string, unknown> };
  bad.spec.minSites = 3;
  await expect(kubectl(['-n', namespace, 'apply', '-f', '-'], JSON.stringify(bad))).rejects.toThrow(
    /spec\.minSites/,
  );
  const badRounds = jobManifest({ name: 'bad', dataDir: small }) as {
    spec: Record<string, unknown>;
  };
  badRounds.spec.rounds = 0;
  await expect(
    kubectl(['-n', namespace, 'apply', '-f', '-'], JSON.stringify(badRounds)),
  ).rejects.toThrow(/spec\.rounds/);
});

test('deleting a job removes everything it created', async () => {
  await getJob(namespace, 'fmnist');
  await kubectl(['-n', namespace, 'delete', 'fedjob', 'fmnist']);
  await waitFor(
    'the objects of fmnist to be deleted',
    async () => {
      const left = await kubectl([
        '-n',
        namespace,
        'get',
        'pods,services,secrets,configmaps',
        '-l',
        'flotilla.dev/job=fmnist',
        '-o',
        'name',
      ]);
      return left.trim() === '' ? true : undefined;
    },
    120_000,
  );
});
