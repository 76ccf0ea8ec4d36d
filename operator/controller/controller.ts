import { randomUUID } from 'crypto';
import {
  KubeConfig,
  KubernetesObject,
  makeInformer,
  V1Pod,
  V1Service,
  Informer,
  ObjectCache,
} from '@kubernetes/client-node';
import { accuracyOf } from '../../federation/coordinator/coordinator';
import { Logger } from '../../federation/log';
import { FederatedJob, GROUP, KIND, PLURAL, VERSION } from '../api/federatedjob';
import { BuildDefaults } from './builders';
import { AGGREGATOR_PORT, aggregatorHost, LABELS, names } from './builders-names';
import { SECRET_KEYS } from './builders-secret';
import { KubeApi } from './kube-api';
import { OperatorMetrics } from './metrics';
import { jobKey, Reconciler, RunnerRegistry } from './reconcile';
import { PodDriver, RoundRunner } from './round-runner';
import { WorkQueue } from './work-queue';

/** ControllerOptions configure one FederatedJob controller. */
export interface ControllerOptions {
  kubeConfig: KubeConfig;
  defaults: BuildDefaults;
  log: Logger;
  metrics: OperatorMetrics;
  /** Watch this namespace only; undefined watches all. */
  namespace?: string;
  /** Reconciles running at once, each on a different job. Default 4. */
  workers?: number;
}

type Cache<T extends KubernetesObject> = Informer<T> & ObjectCache<T>;

/** The label every object the controller creates carries; the pod and Service informers select on it. */
const MANAGED = 'app.kubernetes.io/managed-by=flotilla-operator';

/**
 * Controller watches FederatedJobs and the pods and Services they own, and reconciles each job
 * whenever any of them changes, one reconcile per job at a time, retried with backoff when it
 * fails. It also owns the round runners: one per running job, driving its rounds.
 */
export class Controller implements RunnerRegistry {
  readonly queue = new WorkQueue();
  private readonly api: KubeApi;
  private readonly reconciler: Reconciler;
  private readonly jobs: Cache<KubernetesObject>;
  private readonly pods: Cache<V1Pod>;
  private readonly services: Cache<V1Service>;
  private readonly runners = new Map<string, RoundRunner>();
  private synced = false;
  private stopped = false;

  constructor(private readonly options: ControllerOptions) {
    this.api = new KubeApi(options.kubeConfig);
    const ns = options.namespace;
    const core = this.api.core;
    const custom = this.api.custom;
    this.jobs = makeInformer<KubernetesObject>(
      options.kubeConfig,
      ns
        ? `/apis/${GROUP}/${VERSION}/namespaces/${ns}/${PLURAL}`
        : `/apis/${GROUP}/${VERSION}/${PLURAL}`,
      () =>
        (ns
          ? custom.listNamespacedCustomObject({
              group: GROUP,
              version: VERSION,
              namespace: ns,
              plural: PLURAL,
            })
          : custom.listClusterCustomObject({
              group: GROUP,
              version: VERSION,
              plural: PLURAL,
            })) as never,
    );
    this.pods = makeInformer<V1Pod>(
      options.kubeConfig,
      ns ? `/api/v1/namespaces/${ns}/pods` : '/api/v1/pods',
      () =>
        ns
          ? core.listNamespacedPod({ namespace: ns, labelSelector: MANAGED })
          : core.listPodForAllNamespaces({ labelSelector: MANAGED }),
      MANAGED,
    );
    this.services = makeInformer<V1Service>(
      options.kubeConfig,
      ns ? `/api/v1/namespaces/${ns}/services` : '/api/v1/services',
      () =>
        ns
          ? core.listNamespacedService({ namespace: ns, labelSelector: MANAGED })
          : core.listServiceForAllNamespaces({ labelSelector: MANAGED }),
      MANAGED,
    );
    this.reconciler = new Reconciler(
      this.api,
      (namespace, job) =>
        this.pods.list(namespace).filter((p) => p.metadata?.labels?.[LABELS.job] === job),
      (namespace, name) => this.services.get(name, namespace) !== undefined,
      this,
      options.defaults,
    );
  }

  /** ready says the informers have listed everything once. */
  get ready(): boolean {
    return this.synced;
  }

  /** start runs the informers and the workers; it resolves once the informers have synced. */
  async start(): Promise<void> {
    const enqueueJob = (job: KubernetesObject): void =>
      this.queue.add(jobKey(job.metadata!.namespace!, job.metadata!.name!));
    const enqueueOwner = (obj: KubernetesObject): void => {
      const owner = obj.metadata?.ownerReferences?.find((o) => o.controller && o.kind === KIND);
      if (owner && obj.metadata?.namespace)
        this.queue.add(jobKey(obj.metadata.namespace, owner.name));
    };
    for (const verb of ['add', 'update', 'delete'] as const) {
      this.jobs.on(verb, enqueueJob);
      this.pods.on(verb, enqueueOwner);
      this.services.on(verb, enqueueOwner);
    }
    for (const [name, informer] of [
      ['federatedjobs', this.jobs],
      ['pods', this.pods],
      ['services', this.services],
    ] as const) {
      // An informer whose watch fails stops; start it again after a pause (it relists).
      informer.on('error', (err: unknown) => {
        if (this.stopped) return;
        this.options.log.warn(
          { informer: name, err: String((err as Error)?.message ?? err) },
          'watch failed, restarting',
        );
        setTimeout(() => void informer.start().catch(() => undefined), 3000).unref();
      });
    }
    await Promise.all([this.jobs.start(), this.pods.start(), this.services.start()]);
    this.synced = true;
    this.options.log.info({ jobs: this.jobs.list().length }, 'informers synced');
    for (let i = 0; i < (this.options.workers ?? 4); i++) void this.work();
  }

  /** stop ends the workers, informers and round runners (the jobs go on without them). */
  async stop(): Promise<void> {
    this.stopped = true;
    this.queue.close();
    for (const [key, runner] of this.runners) {
      runner.driver.stop('operator stopping');
      this.runners.delete(key);
    }
    await Promise.all([this.jobs.stop(), this.pods.stop(), this.services.stop()]);
  }

  // ---------------------------------------------------------------------------------------
  // RunnerRegistry

  get(key: string): RoundRunner | undefined {
    return this.runners.get(key);
  }

  async startRunner(job: FederatedJob, aggregatorPod: V1Pod): Promise<RoundRunner> {
    const key = jobKey(job.metadata.namespace, job.metadata.name);
    const existing = this.runners.get(key);
    if (existing) return existing;
    const secret = await this.api.getSecret(job.metadata.namespace, names.secret(job));
    const data = secret?.data ?? {};
    const file = (k: string): Buffer => {
      if (!data[k]) throw new Error(`Secret ${names.secret(job)}: key ${k} missing`);
      return Buffer.from(data[k], 'base64');
    };
    const tls = {
      ca: file(SECRET_KEYS.ca),
      cert: file(SECRET_KEYS.coordinatorCert),
      key: file(SECRET_KEYS.coordinatorKey),
    };
    const podName = aggregatorPod.metadata!.name!;
    const address = (): string | undefined => {
      const pod = this.pods.get(podName, job.metadata.namespace);
      const ip = pod?.metadata?.deletionTimestamp ? undefined : pod?.status?.podIP;
      return ip ? `${ip}:${AGGREGATOR_PORT}` : undefined;
    };
    const log = this.options.log.child({
      job: job.metadata.name,
      namespace: job.metadata.namespace,
    });
    const driver = new PodDriver(address, tls, aggregatorHost(job));
    const created = Date.parse(String(job.metadata.creationTimestamp ?? ''));
    const metrics = this.options.metrics;
    const runner = new RoundRunner(job, driver, log, {
      roundStarted: (round, participants, attempt) => {
        if (round === 1 && attempt === 0 && !job.status?.startTime && !Number.isNaN(created)) {
          const seconds = (Date.now() - created) / 1000;
          metrics.firstRoundSeconds.observe(seconds);
          log.info({ round, durationMs: Math.round(seconds * 1000) }, 'first round started');
        }
        log.info({ round, participants, attempt }, 'round started');
        this.queue.add(key);
      },
      roundFinished: (result, decision, overheadMs) => {
        metrics.rounds.inc({ outcome: result.outcome });
        metrics.roundSeconds.observe(result.durationMs / 1000);
        metrics.roundOverheadSeconds.observe(overheadMs / 1000);
        const accuracy = accuracyOf(result);
        log.info(
          {
            round: result.round,
            outcome: result.outcome,
            action: decision.action,
            accuracy,
            durationMs: result.durationMs,
            operatorMs: overheadMs,
          },
          'round finished',
        );
        const text =
          result.outcome === 'closed'
            ? `round ${result.round} closed with ${result.accepted.length} of ${result.participants.length} sites` +
              (accuracy !== undefined ? `, accuracy ${accuracy.toFixed(4)}` : '') +
              ` in ${(result.durationMs / 1000).toFixed(1)}s`
            : `round ${result.round} failed: ${result.reason}`;
        void this.api.recordEvent(
          {
            kind: job.kind,
            apiVersion: job.apiVersion,
            name: job.metadata.name,
            namespace: job.metadata.namespace,
            uid: job.metadata.uid,
          },
          result.outcome === 'closed' ? 'Normal' : 'Warning',
          result.outcome === 'closed' ? 'RoundFinished' : 'RoundFailed',
          text,
        );
        this.queue.add(key);
      },
      ended: () => this.queue.add(key),
    });
    this.runners.set(key, runner);
    const history = job.status?.history ?? [];
    runner.start(history.length > 0 ? history[history.length - 1].round + 1 : 1);
    return runner;
  }

  remove(key: string, reason: string): void {
    const runner = this.runners.get(key);
    if (!runner) return;
    runner.driver.stop(reason);
    this.runners.delete(key);
  }

  // ---------------------------------------------------------------------------------------

  private async work(): Promise<void> {
    for (;;) {
      const key = await this.queue.next();
      if (key === undefined) return;
      this.options.metrics.queueDepth.set(this.queue.length);
      const [namespace, name] = key.split('/');
      const reconcileID = randomUUID();
      const log = this.options.log.child({ job: name, namespace, reconcileID });
      const started = process.hrtime.bigint();
      try {
        const result = await this.reconciler.reconcile(namespace, name, log);
        this.queue.forget(key);
        this.options.metrics.reconciles.inc({ result: 'success' });
        if (result.requeueAfterMs !== undefined) this.queue.addAfter(key, result.requeueAfterMs);
      } catch (err) {
        const delay = this.queue.retry(key);
        this.options.metrics.reconciles.inc({ result: 'error' });
        log.warn({ err: (err as Error).message, retryInMs: delay }, 'reconcile failed');
      } finally {
        const seconds = Number(process.hrtime.bigint() - started) / 1e9;
        this.options.metrics.reconcileSeconds.observe(seconds);
        log.debug({ durationMs: Math.round(seconds * 1000) }, 'reconciled');
        this.queue.done(key);
      }
    }
  }
}
