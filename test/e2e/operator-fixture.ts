/**
 * What the operator e2e tests share: a per-site split of Fashion-MNIST on this machine's disk
 * (the sites' hostPath volumes), the chart installed in a namespace of its own, and small
 * FederatedJob manifests that run in seconds on two shared cores.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadDataset } from '../../federation/data/dataset';
import { partition } from '../../federation/data/partition';
import { siteDirName, TEST_DIR, writePartition } from '../../federation/data/partition-writer';
import { subsetDataset } from '../../federation/job/model';
import { helm, kubectl, KubeObject, waitFor } from '../cluster/kubectl';

const FASHION_MNIST = process.env.FASHION_MNIST ?? '/usr/share/datasets/fashion-mnist';

/** The chart of this checkout. */
export const chart = path.join(__dirname, '..', '..', 'charts', 'flotilla');

/**
 * prepareSites writes `perSite` training examples for each of two sites (IID) and 500
 * held-out examples under a fresh folder, and returns it: `site-0/`, `site-1/`, `test/`.
 */
export async function prepareSites(perSite: number): Promise<string> {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'flotilla-e2e-data-'));
  const train = subsetDataset(await loadDataset(FASHION_MNIST, 'train'), 2 * perSite);
  const test = subsetDataset(await loadDataset(FASHION_MNIST, 'test'), 500);
  const options = { scheme: 'iid' as const, sites: 2, seed: 3 };
  await writePartition(
    out,
    train,
    partition(train.labels, train.numClasses, options),
    options,
    test,
  );
  return out;
}

/** JobOptions are what the tests vary in a job. */
export interface JobOptions {
  name: string;
  dataDir: string;
  model?: 'logreg' | 'mlp';
  rounds?: number;
  localEpochs?: number;
  /** A host folder for the aggregator's checkpoints, so they outlive its pod. */
  checkpointDir?: string;
}

/**
 * jobManifest is a FederatedJob for the local cluster's two sites: each trainer reads its share
 * from a hostPath volume on its site's node and trains on CPU; the aggregator evaluates on the
 * held-out split after every round.
 */
export function jobManifest(o: JobOptions): object {
  const site = (name: string, index: number) => ({
    name,
    gpus: 0,
    nodeSelector: { 'flotilla.dev/site': name },
    volume: {
      hostPath: { path: path.join(o.dataDir, siteDirName(index)), type: 'Directory' },
    },
  });
  return {
    apiVersion: 'flotilla.dev/v1alpha1',
    kind: 'FederatedJob',
    metadata: { name: o.name },
    spec: {
      model: { zoo: o.model ?? 'logreg', inputShape: [1, 28, 28], numClasses: 10, seed: 1 },
      sites: [site('site-a', 0), site('site-b', 1)],
      rounds: o.rounds ?? 3,
      minSites: 1,
      roundTimeoutSeconds: 60,
      training: { localEpochs: o.localEpochs ?? 1, batchSize: 32, learningRate: 0.05 },
      evaluation: {
        data: TEST_DIR,
        volume: { hostPath: { path: o.dataDir, type: 'Directory' } },
      },
      backoffLimit: 2,
      ...(o.checkpointDir && {
        checkpointVolume: { hostPath: { path: o.checkpointDir, type: 'DirectoryOrCreate' } },
      }),
    },
  };
}

/**
 * installOperator installs the chart as release `release` in `namespace`, watching that
 * namespace only (so operators of other test runs on the same cluster leave its jobs alone),
 * and waits for the operator pods to be ready. `values` are extra `--set` assignments.
 */
export async function installOperator(
  release: string,
  namespace: string,
  values: string[] = [],
): Promise<void> {
  const sets = [`watchNamespace=${namespace}`, 'logLevel=debug', ...values];
  await helm([
    'install',
    release,
    chart,
    '--namespace',
    namespace,
    '--create-namespace',
    ...sets.flatMap((v) => ['--set', v]),
    '--wait',
    '--timeout',
    '3m',
  ]);
}

/** FedJob is the part of a FederatedJob the tests read. */
export interface FedJob {
  metadata: { name: string; generation: number; uid: string; creationTimestamp: string };
  status?: {
    phase?: string;
    round?: number;
    roundProgress?: string;
    sitesReady?: string;
    startTime?: string;
    observedGeneration?: number;
    conditions?: { type: string; status: string; reason: string; observedGeneration?: number }[];
    metrics?: { round: number; accuracy?: number; loss?: number };
    history?: { round: number; accuracy?: number }[];
    sites?: {
      name: string;
      pod?: string;
      phase: string;
      restarts: number;
      lastRound?: number;
      examples?: number;
    }[];
  };
}

/** getJob reads a FederatedJob. */
export async function getJob(namespace: string, name: string): Promise<FedJob> {
  return JSON.parse(
    await kubectl(['-n', namespace, 'get', 'fedjob', name, '-o', 'json']),
  ) as FedJob;
}

/** waitForPhase waits until the job reaches `phase`, failing early if it fails instead. */
export async function waitForPhase(
  namespace: string,
  name: string,
  phase: string,
  timeoutMs = 240_000,
): Promise<FedJob> {
  return waitFor(
    `${namespace}/${name} to reach ${phase}`,
    async () => {
      const job = await getJob(namespace, name);
      if (job.status?.phase === 'Failed' && phase !== 'Failed') {
        throw new Error(`job failed: ${JSON.stringify(job.status.conditions)}`);
      }
      return job.status?.phase === phase ? job : undefined;
    },
    timeoutMs,
  );
}

/** waitForRound waits until the job has started round `round` or a later one. */
export async function waitForRound(
  namespace: string,
  name: string,
  round: number,
): Promise<FedJob> {
  return waitFor(
    `${namespace}/${name} to reach round ${round}`,
    async () => {
      const job = await getJob(namespace, name);
      return (job.status?.round ?? 0) >= round && job.status?.phase === 'Running' ? job : undefined;
    },
    180_000,
  );
}

/** pods lists the pods of a job. */
export async function jobPods(namespace: string, job: string): Promise<KubeObject[]> {
  const list = JSON.parse(
    await kubectl(['-n', namespace, 'get', 'pods', '-l', `flotilla.dev/job=${job}`, '-o', 'json']),
  ) as { items: KubeObject[] };
  return list.items;
}

/** eventReasons are the reasons of the Events about a job, oldest first. */
export async function eventReasons(namespace: string, job: string): Promise<string[]> {
  const list = JSON.parse(
    await kubectl([
      '-n',
      namespace,
      'get',
      'events',
      '--field-selector',
      `involvedObject.kind=FederatedJob,involvedObject.name=${job}`,
      '-o',
      'json',
    ]),
  ) as { items: { reason: string; message: string }[] };
  return list.items.map((e) => e.reason);
}

/** operatorLogs are the JSON log lines of the operator pods of the release. */
export async function operatorLogs(
  namespace: string,
  release: string,
): Promise<Record<string, unknown>[]> {
  const text = await kubectl([
    '-n',
    namespace,
    'logs',
    '-l',
    `app.kubernetes.io/instance=${release},app.kubernetes.io/component=operator`,
    '--tail',
    '-1',
  ]);
  return text
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}
