import type { V1Pod } from '@kubernetes/client-node';
import { accuracyOf, JobOutcome } from '../../federation/coordinator/coordinator';
import { Logger } from '../../federation/log';
import { FederatedJob, FederatedJobStatus, Phase } from '../api/federatedjob';
import {
  BuildDefaults,
  BuildError,
  buildAggregatorPod,
  buildAggregatorService,
  buildManifestConfigMap,
  buildTrainerPod,
} from './builders';
import { LABELS, names } from './builders-names';
import { buildJobSecret, issueJobCertificates } from './builders-secret';
import { EventType, KubeApi } from './kube-api';
import { JobInterrupted, RoundRunner } from './round-runner';
import {
  attemptOf,
  mergeHistory,
  newestTrainers,
  podFailed,
  podReady,
  setCondition,
  SiteFacts,
  siteStatuses,
  sitesReady,
} from './status';

/** What a reconcile asks of the queue: nothing, or another look after a delay. */
export interface ReconcileResult {
  requeueAfterMs?: number;
}

/** The pods of one job as the informer sees them. */
export type PodLister = (namespace: string, job: string) => V1Pod[];

/** ServiceLookup says whether the informer's cache holds a Service of that namespace and name. */
export type ServiceLookup = (namespace: string, name: string) => boolean;

/** The runners of the jobs this operator drives, by job key. */
export interface RunnerRegistry {
  get(key: string): RoundRunner | undefined;
  /** startRunner makes and starts a runner for the job unless one exists. */
  startRunner(job: FederatedJob, aggregatorPod: V1Pod): Promise<RoundRunner>;
  /** remove forgets the runner of `key` (stopping it first if it still runs). */
  remove(key: string, reason: string): void;
}

const TERMINAL: ReadonlySet<Phase | undefined> = new Set<Phase | undefined>([
  'Succeeded',
  'Failed',
]);

/** How often a running job is looked at even when nothing changes (deadlines, lost events). */
const RESYNC_MS = 30_000;

/** After a job ends, pods that still run get this long to exit on their own. */
const EXIT_GRACE_MS = 20_000;

/** jobKey is the queue key of a job. */
export const jobKey = (namespace: string, name: string): string => `${namespace}/${name}`;

/**
 * Reconciler brings one FederatedJob's world in line with its spec and records what it sees
 * in its status. It is level-triggered: every call reads the job fresh from the API server and
 * the pods from the informer, and decides from them, the status and the aggregator's own state
 * (through the runner) alone, so a restarted operator carries on where the job stands.
 */
export class Reconciler {
  constructor(
    private readonly api: KubeApi,
    private readonly pods: PodLister,
    private readonly hasService: ServiceLookup,
    private readonly runners: RunnerRegistry,
    private readonly defaults: BuildDefaults,
    private readonly clock: () => Date = () => new Date(),
  ) {}

  async reconcile(namespace: string, name: string, log: Logger): Promise<ReconcileResult> {
    const key = jobKey(namespace, name);
    const job = await this.api.getJob(namespace, name);
    // A deleted job's objects go with it (owner references); only our runner is left to stop.
    if (!job || (job.metadata as { deletionTimestamp?: unknown }).deletionTimestamp) {
      this.runners.remove(key, 'the FederatedJob was deleted');
      return {};
    }
    let pods = this.pods(namespace, name);

    if (TERMINAL.has(job.status?.phase)) return this.finished(job, pods, log);

    const runner = this.runners.get(key);
    if (runner?.outcome) return this.runEnded(job, pods, runner, log);

    const overdue = this.overdue(job);
    if (overdue) {
      runner?.driver.stop(overdue);
      return this.fail(job, pods, 'DeadlineExceeded', overdue, log);
    }

    if (job.spec.suspend) return this.suspend(job, pods, runner, log);

    let failedSites: Map<string, string>;
    try {
      await this.ensureShared(job, log);
      const trainers = await this.ensureTrainers(job, pods, log);
      failedSites = trainers.failed;
      pods = [...pods, ...trainers.created];
    } catch (err) {
      // A spec the builders cannot turn into pods will not get better by retrying.
      if (!(err instanceof BuildError)) throw err;
      return this.fail(job, pods, 'InvalidSpec', err.message, log);
    }
    const healthy = job.spec.sites.length - failedSites.size;
    if (healthy < job.spec.minSites) {
      runner?.driver.stop('too few sites left');
      const detail = [...failedSites].map(([site, why]) => `${site}: ${why}`).join('; ');
      const message = `${healthy} of ${job.spec.sites.length} sites left, spec.minSites is ${job.spec.minSites} (${detail})`;
      return this.fail(job, pods, 'BackoffLimitExceeded', message, log);
    }

    const aggregator = pods.find((p) => p.metadata?.name === names.aggregator(job));
    // The aggregator ends only when the job was finished: the record of it was lost (the
    // operator went down between finishing the job and writing its status).
    if (aggregator?.status?.phase === 'Succeeded' && !runner) {
      return this.complete(job, pods, 'succeeded', 'the aggregator finished the job', log);
    }
    if (!runner && podReady(aggregator) && aggregator?.status?.podIP) {
      await this.runners.startRunner(job, aggregator);
      log.info({ pod: aggregator.metadata?.name }, 'round runner started');
    }

    await this.writeProgress(job, pods, failedSites, this.runners.get(key));
    return { requeueAfterMs: this.nextLook(job) };
  }

  // ---------------------------------------------------------------------------------------
  // Objects the job owns

  /** ensureShared creates the Secret, manifest, Service and aggregator pod that are missing. */
  private async ensureShared(job: FederatedJob, log: Logger): Promise<void> {
    const ns = job.metadata.namespace;
    // The certificates are made once: reissuing them would lock out pods holding the old ones.
    if (!(await this.api.getSecret(ns, names.secret(job)))) {
      const secret = buildJobSecret(job, await issueJobCertificates(job));
      if (await this.api.createSecret(secret)) log.info({ secret: names.secret(job) }, 'created');
    }
    // TODO: the manifest is written once; a later change to spec.rounds or spec.stopping reaches
    // the coordinator only when its runner restarts, and the aggregator never (it does not use them).
    if (!(await this.api.getConfigMap(ns, names.manifest(job)))) {
      await this.api.createConfigMap(buildManifestConfigMap(job));
    }
    // The cache may lag a create by a moment; the API server's conflict answer covers that.
    if (!this.hasService(ns, names.aggregator(job))) {
      await this.api.createService(buildAggregatorService(job));
    }

    const pod = this.pods(ns, job.metadata.name).find(
      (p) => p.metadata?.name === names.aggregator(job),
    );
    if (pod?.status?.phase === 'Failed' && !pod.metadata?.deletionTimestamp) {
      // A pod that failed for good (its node went away) is not restarted: make room for a new one.
      await this.api.deletePod(ns, pod.metadata!.name!);
      await this.event(
        job,
        'Warning',
        'AggregatorReplaced',
        `aggregator pod failed: ${reasonOf(pod)}`,
      );
      return;
    }
    if (!pod && (await this.api.createPod(buildAggregatorPod(job, this.defaults)))) {
      log.info({ pod: names.aggregator(job) }, 'aggregator pod created');
      if (job.status?.phase === 'Running') {
        await this.event(
          job,
          'Warning',
          'AggregatorReplaced',
          'aggregator pod was gone: created a new one, which resumes from its checkpoint',
        );
      }
    }
  }

  /**
   * ensureTrainers gives every site a trainer pod. A site whose pod failed, is being deleted or
   * is gone gets a replacement with the next attempt number, up to spec.backoffLimit; the
   * attempt number lives in the pod's name, so repeating this step never replaces twice.
   * It returns the sites that used up their replacements, and the pods it created.
   */
  private async ensureTrainers(
    job: FederatedJob,
    pods: readonly V1Pod[],
    log: Logger,
  ): Promise<{ failed: Map<string, string>; created: V1Pod[] }> {
    const ns = job.metadata.namespace;
    const trainers = newestTrainers(
      pods.filter((p) => p.metadata?.labels?.[LABELS.role] === 'trainer'),
    );
    const recorded = new Map((job.status?.sites ?? []).map((s) => [s.name, s]));
    const failed = new Map<string, string>();
    const created: V1Pod[] = [];
    for (const [index, site] of job.spec.sites.entries()) {
      let pod = trainers.get(site.name);
      const known = recorded.get(site.name);
      // The pod status names may only be missing from the informer's cache, which lags behind
      // our own creates: ask the API server before calling it gone.
      if (!pod && known?.pod) pod = await this.api.getPod(ns, known.pod);
      if (!pod && !known?.pod) {
        const first = buildTrainerPod(job, index, known?.restarts ?? 0, this.defaults);
        if (await this.api.createPod(first)) created.push(first);
        continue;
      }
      if (pod && !podFailed(pod) && !pod.metadata?.deletionTimestamp) continue;

      const attempt = pod ? attemptOf(pod) + 1 : (known?.restarts ?? 0) + 1;
      const name = pod?.metadata?.name ?? known?.pod;
      const why = !pod ? 'gone' : pod.metadata?.deletionTimestamp ? 'deleted' : reasonOf(pod);
      if (attempt > job.spec.backoffLimit) {
        failed.set(
          site.name,
          `trainer failed ${attempt} times (spec.backoffLimit ${job.spec.backoffLimit}), last: ${why}`,
        );
        continue;
      }
      const replacement = buildTrainerPod(job, index, attempt, this.defaults);
      // A failed trainer is replaced at once, not only between rounds: a replacement that joins
      // while its round is open gets that round's task, so the round can still close in full.
      if (!(await this.api.createPod(replacement))) continue;
      created.push(replacement);
      log.info({ site: site.name, pod: replacement.metadata?.name, attempt }, 'trainer replaced');
      await this.event(
        job,
        'Warning',
        'SiteReplaced',
        `site ${site.name}: trainer pod ${name} ${why}; replaced by ${replacement.metadata?.name} ` +
          `(${attempt} of spec.backoffLimit ${job.spec.backoffLimit})`,
      );
    }
    return { failed, created };
  }

  // ---------------------------------------------------------------------------------------
  // Status

  /** writeProgress records the phase, round, sites and metrics of a job that runs. */
  private async writeProgress(
    job: FederatedJob,
    pods: readonly V1Pod[],
    failedSites: ReadonlyMap<string, string>,
    runner: RoundRunner | undefined,
  ): Promise<void> {
    const now = this.clock();
    const gen = job.metadata.generation;
    let status = this.baseStatus(job, pods, runner, failedSites, false);
    const started = status.startTime !== undefined;
    const phase: Phase = started ? 'Running' : 'Pending';
    let conditions = setCondition(
      status.conditions,
      'Created',
      'True',
      'ObjectsCreated',
      'Secret, manifest, aggregator and trainer pods created',
      gen,
      now,
    );
    conditions = setCondition(
      conditions,
      'Running',
      started ? 'True' : 'False',
      started ? 'RoundsRunning' : 'WaitingForAggregator',
      started
        ? `round ${status.round ?? 0} of ${job.spec.rounds}`
        : 'waiting for the aggregator pod to be ready',
      gen,
      now,
    );
    if (job.status?.phase === 'Suspended') {
      conditions = setCondition(
        conditions,
        'Suspended',
        'False',
        'Resumed',
        'spec.suspend cleared',
        gen,
        now,
      );
      await this.event(
        job,
        'Normal',
        'Resumed',
        'spec.suspend cleared: trainers recreated, rounds resume from the last checkpoint',
      );
    }
    status = { ...status, phase, conditions, observedGeneration: gen };
    if (!sameStatus(job.status, status)) await this.api.patchJobStatus(job, status);
  }

  /**
   * baseStatus is the status every phase shares: round, history, metrics and sites, from the
   * status written so far and what the runner has seen since.
   */
  private baseStatus(
    job: FederatedJob,
    pods: readonly V1Pod[],
    runner: RoundRunner | undefined,
    failedSites: ReadonlyMap<string, string>,
    finished: boolean,
  ): FederatedJobStatus {
    const previous = job.status ?? {};
    const lastUpdate = new Map<string, { round: number; examples?: number }>();
    for (const result of runner?.results ?? []) {
      if (result.outcome !== 'closed') continue;
      for (const site of result.accepted) {
        lastUpdate.set(site, { round: result.round, examples: result.siteExamples?.[site] });
      }
    }
    const history = mergeHistory(previous.history, runner?.rounds ?? []);
    const completed = history.length > 0 ? history[history.length - 1].round : 0;
    const round = runner?.current?.round ?? Math.max(previous.round ?? 0, completed);
    const trainers = newestTrainers(
      pods.filter((p) => p.metadata?.labels?.[LABELS.role] === 'trainer'),
    );
    const facts: SiteFacts = {
      training: new Set(runner?.current?.participants ?? []),
      lastUpdate,
      failed: failedSites,
      finished,
    };
    const firstRound = runner?.firstRoundAt?.toISOString();
    return {
      ...previous,
      round,
      roundProgress: `${completed}/${job.spec.rounds}`,
      roundRetries: runner?.current?.attempt ?? previous.roundRetries ?? 0,
      sitesReady: sitesReady(job, trainers),
      sites: siteStatuses(job, trainers, facts),
      ...(history.length > 0 && { history, metrics: history[history.length - 1] }),
      ...((previous.startTime ?? firstRound) && { startTime: previous.startTime ?? firstRound }),
    };
  }

  /** runEnded records how a run of the coordinator ended and forgets the runner. */
  private async runEnded(
    job: FederatedJob,
    pods: readonly V1Pod[],
    runner: RoundRunner,
    log: Logger,
  ): Promise<ReconcileResult> {
    const key = jobKey(job.metadata.namespace, job.metadata.name);
    const outcome = runner.outcome!;
    if (outcome instanceof JobInterrupted && outcome.kind === 'suspended') {
      // Fold the rounds of this run into status before the runner goes.
      await this.api.patchJobStatus(job, this.baseStatus(job, pods, runner, new Map(), false));
      this.runners.remove(key, 'suspended');
      return { requeueAfterMs: 0 };
    }
    if (outcome instanceof Error) {
      // The aggregator refused or stayed away past its grace: try again with a new runner,
      // which starts from whatever the aggregator has checkpointed.
      log.warn({ err: outcome.message }, 'round runner failed, restarting it');
      await this.event(job, 'Warning', 'RoundRunnerFailed', outcome.message);
      this.runners.remove(key, outcome.message);
      return { requeueAfterMs: 5_000 };
    }
    const result = await this.complete(
      job,
      pods,
      outcome.outcome,
      outcome.reason,
      log,
      runner,
      outcome,
    );
    this.runners.remove(key, 'job finished');
    return result;
  }

  /** complete writes the terminal status of a job that succeeded or failed on the aggregator. */
  private async complete(
    job: FederatedJob,
    pods: readonly V1Pod[],
    outcome: 'succeeded' | 'failed',
    reason: string,
    log: Logger,
    runner?: RoundRunner,
    jobOutcome?: JobOutcome,
  ): Promise<ReconcileResult> {
    const now = this.clock();
    const gen = job.metadata.generation;
    const status = this.baseStatus(job, pods, runner, new Map(), true);
    const succeeded = outcome === 'succeeded';
    const type = succeeded ? 'Succeeded' : 'Failed';
    const cause = succeeded ? 'RoundsCompleted' : 'RoundsFailed';
    let conditions = setCondition(status.conditions, type, 'True', cause, reason, gen, now);
    conditions = setCondition(conditions, 'Running', 'False', cause, reason, gen, now);
    const model =
      jobOutcome?.modelPath && jobOutcome.modelPath !== ''
        ? { path: jobOutcome.modelPath, round: jobOutcome.completedRound }
        : status.model;
    await this.api.patchJobStatus(job, {
      ...status,
      phase: succeeded ? 'Succeeded' : 'Failed',
      conditions,
      observedGeneration: gen,
      completionTime: now.toISOString(),
      ...(model && { model }),
    });
    const accuracy = status.metrics?.accuracy;
    const detail = accuracy !== undefined ? `, accuracy ${accuracy.toFixed(4)}` : '';
    await this.event(
      job,
      succeeded ? 'Normal' : 'Warning',
      succeeded ? 'JobSucceeded' : 'JobFailed',
      `${reason}${detail}`,
    );
    log.info({ outcome, reason, accuracy }, 'job finished');
    return { requeueAfterMs: EXIT_GRACE_MS };
  }

  /** fail ends a job the operator gave up on (deadline, sites used up), stopping its pods. */
  private async fail(
    job: FederatedJob,
    pods: readonly V1Pod[],
    reason: 'DeadlineExceeded' | 'BackoffLimitExceeded' | 'InvalidSpec',
    message: string,
    log: Logger,
  ): Promise<ReconcileResult> {
    const key = jobKey(job.metadata.namespace, job.metadata.name);
    const runner = this.runners.get(key);
    const now = this.clock();
    const gen = job.metadata.generation;
    const status = this.baseStatus(job, pods, runner, new Map(), false);
    let conditions = setCondition(status.conditions, 'Failed', 'True', reason, message, gen, now);
    conditions = setCondition(conditions, 'Running', 'False', reason, message, gen, now);
    await this.api.patchJobStatus(job, {
      ...status,
      phase: 'Failed',
      conditions,
      observedGeneration: gen,
      completionTime: now.toISOString(),
    });
    this.runners.remove(key, message);
    await this.event(job, 'Warning', reason, message);
    log.warn({ reason, message }, 'job failed');
    await this.deleteRunning(job, pods);
    return { requeueAfterMs: this.ttlLeft(job) };
  }

  /**
   * suspend lets the round in progress finish, then deletes the trainer pods (which hold the
   * GPUs). The aggregator pod stays: it holds the checkpoint when that is an emptyDir, and
   * a resumed job goes on from it.
   */
  private async suspend(
    job: FederatedJob,
    pods: readonly V1Pod[],
    runner: RoundRunner | undefined,
    log: Logger,
  ): Promise<ReconcileResult> {
    if (runner && !runner.outcome) {
      runner.driver.suspendAfterRound();
      return { requeueAfterMs: RESYNC_MS };
    }
    for (const pod of pods) {
      if (pod.metadata?.labels?.[LABELS.role] !== 'trainer' || pod.metadata.deletionTimestamp)
        continue;
      await this.api.deletePod(job.metadata.namespace, pod.metadata.name!);
    }
    if (job.status?.phase === 'Suspended') return {};
    const now = this.clock();
    const gen = job.metadata.generation;
    const status = this.baseStatus(job, [], undefined, new Map(), false);
    let conditions = setCondition(
      status.conditions,
      'Suspended',
      'True',
      'JobSuspended',
      'spec.suspend is set',
      gen,
      now,
    );
    conditions = setCondition(
      conditions,
      'Running',
      'False',
      'JobSuspended',
      'spec.suspend is set',
      gen,
      now,
    );
    await this.api.patchJobStatus(job, {
      ...status,
      phase: 'Suspended',
      conditions,
      observedGeneration: gen,
    });
    await this.event(
      job,
      'Normal',
      'Suspended',
      `suspended after round ${status.round ?? 0}: trainer pods deleted`,
    );
    log.info({ round: status.round }, 'job suspended');
    return {};
  }

  /** finished cleans up after a job that ended and applies its TTL. */
  private async finished(
    job: FederatedJob,
    pods: readonly V1Pod[],
    log: Logger,
  ): Promise<ReconcileResult> {
    const now = this.clock();
    const done = Date.parse(job.status?.completionTime ?? '') || now.getTime();
    if (now.getTime() - done >= EXIT_GRACE_MS) await this.deleteRunning(job, pods);
    const ttl = job.spec.ttlSecondsAfterFinished;
    if (ttl === undefined)
      return now.getTime() - done < EXIT_GRACE_MS ? { requeueAfterMs: EXIT_GRACE_MS } : {};
    const left = done + ttl * 1000 - now.getTime();
    if (left > 0)
      return {
        requeueAfterMs: Math.min(left, Math.max(EXIT_GRACE_MS - (now.getTime() - done), 0) || left),
      };
    log.info({ ttlSecondsAfterFinished: ttl }, 'job deleted after its TTL');
    await this.api.deleteJob(job);
    return {};
  }

  // ---------------------------------------------------------------------------------------
  // Small steps

  private async deleteRunning(job: FederatedJob, pods: readonly V1Pod[]): Promise<void> {
    for (const pod of pods) {
      const phase = pod.status?.phase;
      if (phase === 'Succeeded' || phase === 'Failed' || pod.metadata?.deletionTimestamp) continue;
      await this.api.deletePod(job.metadata.namespace, pod.metadata!.name!);
    }
  }

  /** overdue says why the job ran past spec.activeDeadlineSeconds, or undefined. */
  private overdue(job: FederatedJob): string | undefined {
    const limit = job.spec.activeDeadlineSeconds;
    const start = Date.parse(job.status?.startTime ?? '');
    if (limit === undefined || Number.isNaN(start)) return undefined;
    const ran = (this.clock().getTime() - start) / 1000;
    if (ran <= limit) return undefined;
    return `ran ${Math.round(ran)}s, longer than spec.activeDeadlineSeconds ${limit}`;
  }

  private nextLook(job: FederatedJob): number {
    const limit = job.spec.activeDeadlineSeconds;
    const start = Date.parse(job.status?.startTime ?? '');
    if (limit === undefined || Number.isNaN(start)) return RESYNC_MS;
    const left = start + limit * 1000 - this.clock().getTime();
    return Math.max(100, Math.min(RESYNC_MS, left + 100));
  }

  private ttlLeft(job: FederatedJob): number | undefined {
    const ttl = job.spec.ttlSecondsAfterFinished;
    return ttl === undefined ? EXIT_GRACE_MS : Math.min(ttl * 1000, EXIT_GRACE_MS);
  }

  private async event(
    job: FederatedJob,
    type: EventType,
    reason: string,
    message: string,
  ): Promise<void> {
    await this.api.recordEvent(
      {
        kind: job.kind,
        apiVersion: job.apiVersion,
        name: job.metadata.name,
        namespace: job.metadata.namespace,
        uid: job.metadata.uid,
      },
      type,
      reason,
      message,
    );
  }
}

/** reasonOf says why a pod failed, from its container's termination. */
export function reasonOf(pod: V1Pod): string {
  const terminated = pod.status?.containerStatuses?.[0]?.state?.terminated;
  if (terminated) {
    return `exited with code ${terminated.exitCode}${terminated.reason ? ` (${terminated.reason})` : ''}`;
  }
  return pod.status?.reason ?? pod.status?.message ?? `phase ${pod.status?.phase ?? 'unknown'}`;
}

// The status is written only when it changed, so a resync does not touch the job (and its
// watch event does not start another reconcile). Key order differs between what the API server
// returns and what we build, so both sides are compared with sorted keys.
function sameStatus(a: FederatedJobStatus | undefined, b: FederatedJobStatus): boolean {
  return canonical(a ?? {}) === canonical(b);
}

function canonical(value: unknown): string {
  return JSON.stringify(value, (_, v: unknown) =>
    v && typeof v === 'object' && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v).sort(([x], [y]) => (x < y ? -1 : 1)))
      : v,
  );
}

/** accuracyText is the accuracy of a round result for messages ("0.8123", or "n/a"). */
export function accuracyText(result: Parameters<typeof accuracyOf>[0]): string {
  const a = accuracyOf(result);
  return a === undefined ? 'n/a' : a.toFixed(4);
}
