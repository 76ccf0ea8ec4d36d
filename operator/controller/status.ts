import type { V1Pod } from '@kubernetes/client-node';
import { accuracyOf } from '../../federation/coordinator/coordinator';
import type { RoundResult } from '../../federation/protocol/wire';
import {
  ConditionType,
  FederatedJob,
  FederatedJobStatus,
  JobCondition,
  MAX_HISTORY,
} from '../api/federatedjob';
import { LABELS } from './builders-names';

/** RoundMetrics is one entry of status.history (and status.metrics). */
export type RoundMetrics = NonNullable<FederatedJobStatus['metrics']>;

/** SiteStatus is one entry of status.sites. */
export type SiteStatus = NonNullable<FederatedJobStatus['sites']>[number];

/**
 * setCondition returns `conditions` with the one of `type` set. lastTransitionTime moves only
 * when the status flips, so it says since when the condition holds, as Kubernetes expects.
 */
export function setCondition(
  conditions: readonly JobCondition[] | undefined,
  type: ConditionType,
  status: 'True' | 'False',
  reason: string,
  message: string,
  observedGeneration: number | undefined,
  now: Date,
): JobCondition[] {
  const list = [...(conditions ?? [])];
  const index = list.findIndex((c) => c.type === type);
  const previous = index >= 0 ? list[index] : undefined;
  const next: JobCondition = {
    type,
    status,
    reason,
    message,
    lastTransitionTime:
      previous && previous.status === status ? previous.lastTransitionTime : now.toISOString(),
    ...(observedGeneration !== undefined && { observedGeneration }),
  };
  if (index >= 0) list[index] = next;
  else list.push(next);
  return list;
}

/** conditionIs says whether the condition of `type` holds. */
export function conditionIs(status: FederatedJobStatus | undefined, type: ConditionType): boolean {
  return status?.conditions?.some((c) => c.type === type && c.status === 'True') ?? false;
}

/**
 * roundMetrics turns an aggregator's round result into the status form: accuracy and loss of
 * the held-out evaluation when the job has one, else the federated evaluation of the sites.
 */
export function roundMetrics(result: RoundResult, completion: Date): RoundMetrics {
  const heldOut = result.evalMetrics.accuracy !== undefined;
  const loss = heldOut ? result.evalMetrics.loss : result.siteMetrics.eval_loss;
  const accuracy = accuracyOf(result);
  const trainLoss = result.siteMetrics.train_loss;
  return {
    round: result.round,
    ...(finite(accuracy) && { accuracy: fourPlaces(accuracy) }),
    ...(finite(loss) && { loss: fourPlaces(loss) }),
    ...(finite(trainLoss) && { trainLoss: fourPlaces(trainLoss) }),
    participants: result.accepted.length,
    examples: result.examples,
    durationSeconds: result.durationMs / 1000,
    completionTime: completion.toISOString(),
  };
}

// Status figures keep four decimals, so `kubectl get fedjobs` columns stay readable; the
// aggregator's logs carry the full values.
function fourPlaces(x: number): number {
  return Math.round(x * 1e4) / 1e4;
}

function finite(x: number | undefined): x is number {
  return x !== undefined && Number.isFinite(x);
}

/**
 * mergeHistory adds rounds to the history, one entry per round (a newer entry for a round
 * replaces the older), oldest first, keeping the most recent MAX_HISTORY.
 */
export function mergeHistory(
  history: readonly RoundMetrics[] | undefined,
  rounds: readonly RoundMetrics[],
): RoundMetrics[] {
  const byRound = new Map<number, RoundMetrics>();
  for (const entry of [...(history ?? []), ...rounds]) byRound.set(entry.round, entry);
  return [...byRound.values()].sort((a, b) => a.round - b.round).slice(-MAX_HISTORY);
}

/** attemptOf is the attempt number a trainer pod carries in its label (0 when missing). */
export function attemptOf(pod: V1Pod): number {
  const value = Number(pod.metadata?.labels?.[LABELS.attempt]);
  return Number.isInteger(value) && value >= 0 ? value : 0;
}

/** newestTrainers maps each site to its trainer pod with the highest attempt number. */
export function newestTrainers(pods: readonly V1Pod[]): Map<string, V1Pod> {
  const newest = new Map<string, V1Pod>();
  for (const pod of pods) {
    const site = pod.metadata?.labels?.[LABELS.site];
    if (site === undefined) continue;
    const known = newest.get(site);
    if (!known || attemptOf(pod) > attemptOf(known)) newest.set(site, pod);
  }
  return newest;
}

/** podFailed says the pod ended without success, or is being deleted. */
export function podFailed(pod: V1Pod): boolean {
  return pod.status?.phase === 'Failed';
}

/** podReady says the pod runs and passes its readiness probe. */
export function podReady(pod: V1Pod | undefined): boolean {
  if (!pod || pod.metadata?.deletionTimestamp || pod.status?.phase !== 'Running') return false;
  return pod.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;
}

/** What the controller knows about each site beyond its pods. */
export interface SiteFacts {
  /** Sites taking part in the round in progress. */
  training: ReadonlySet<string>;
  /**
   * The last round each site's update was aggregated in, and its example count.
   */
  lastUpdate: ReadonlyMap<string, { round: number; examples?: number }>;
  /** Sites that used up their backoffLimit, and why. */
  failed: ReadonlyMap<string, string>;
  finished: boolean;
}

/**
 * siteStatuses is status.sites: for every site of the spec, its newest trainer pod, what that
 * pod is doing and how many times the site's trainer was replaced (its attempt number).
 */
export function siteStatuses(
  job: FederatedJob,
  trainers: ReadonlyMap<string, V1Pod>,
  facts: SiteFacts,
): SiteStatus[] {
  const previous = new Map((job.status?.sites ?? []).map((s) => [s.name, s]));
  return job.spec.sites.map((site) => {
    const pod = trainers.get(site.name);
    const before = previous.get(site.name);
    const update = facts.lastUpdate.get(site.name);
    const lastRound = update?.round ?? before?.lastRound;
    const examples = update?.examples ?? before?.examples;
    const failure = facts.failed.get(site.name);
    let phase: SiteStatus['phase'] = 'Pending';
    if (failure !== undefined) phase = 'Failed';
    else if (facts.finished) phase = 'Finished';
    else if (podReady(pod)) phase = facts.training.has(site.name) ? 'Training' : 'Running';
    return {
      name: site.name,
      ...(pod && { pod: pod.metadata!.name! }),
      phase,
      restarts: Math.max(pod ? attemptOf(pod) : 0, before?.restarts ?? 0),
      ...(lastRound !== undefined && { lastRound }),
      ...(examples !== undefined && { examples }),
      ...(failure !== undefined && { message: failure }),
    };
  });
}

/** sitesReady is the printer column "2/3": sites whose trainer pod is ready, of all sites. */
export function sitesReady(job: FederatedJob, trainers: ReadonlyMap<string, V1Pod>): string {
  const ready = job.spec.sites.filter((s) => podReady(trainers.get(s.name))).length;
  return `${ready}/${job.spec.sites.length}`;
}
