import { SeededRandom } from '../random';
import { Logger } from '../log';
import { AggregatorStatus, RoundResult, StartRoundRequest } from '../protocol/wire';

/**
 * RoundDriver is how the coordinator reaches the aggregator. Any method may reject with
 * AggregatorUnavailable while the aggregator is down (restarting, rescheduled); the coordinator
 * then waits for it to come back and picks up from what it reports.
 */
export interface RoundDriver {
  status(): Promise<AggregatorStatus>;
  startRound(request: StartRoundRequest): Promise<void>;
  /** Resolves with the result of `round` once the aggregator reports it (now or earlier). */
  waitForResult(round: number): Promise<RoundResult>;
  finish(reason: string): Promise<{ modelPath: string }>;
}

/** SiteObserver tells which sites can take part now (connected trainers, ready pods). */
export interface SiteObserver {
  healthySites(): Promise<string[]>;
}

/** AggregatorUnavailable marks a failure to reach the aggregator, as opposed to a refusal. */
export class AggregatorUnavailable extends Error {
  override readonly name = 'AggregatorUnavailable';
}

/** CoordinatorPolicy is the part of a job's spec that drives rounds. */
export interface CoordinatorPolicy {
  job: string;
  sites: string[];
  rounds: number;
  minSites: number;
  sitesPerRound: number;
  roundTimeoutMs: number;
  targetAccuracy?: number;
  maxRoundRetries: number;
  seed: number;
  /** How long to wait for the aggregator to come back before the job fails. Default 5 min. */
  aggregatorGraceMs?: number;
}

/** Decision is what happens after a round. */
export type Decision =
  | { action: 'continue' }
  | { action: 'retry'; reason: string }
  | { action: 'stop'; outcome: 'succeeded' | 'failed'; reason: string };

/** JobOutcome is how the job ended. */
export interface JobOutcome {
  outcome: 'succeeded' | 'failed';
  reason: string;
  completedRound: number;
  results: RoundResult[];
  modelPath: string;
}

/** CoordinatorEvents let the caller show progress (a progress bar, Kubernetes status). */
export interface CoordinatorEvents {
  roundStarted?(round: number, participants: string[], attempt: number): void;
  roundFinished?(result: RoundResult, decision: Decision): void;
}

/**
 * pickParticipants chooses `count` of the healthy sites, reproducibly: the same seed, round
 * and attempt give the same choice, and a retry draws anew.
 */
export function pickParticipants(
  healthy: readonly string[],
  count: number,
  seed: number,
  round: number,
  attempt: number,
): string[] {
  const sorted = [...new Set(healthy)].sort();
  const random = new SeededRandom(seed * 1_000_003 + round * 1009 + attempt);
  return Array.from(random.permutation(sorted.length).subarray(0, count), (i) => sorted[i]).sort();
}

/** accuracyOf reads the accuracy a round reached: held-out if measured, else federated. */
export function accuracyOf(result: RoundResult): number | undefined {
  return result.evalMetrics.accuracy ?? result.siteMetrics.eval_accuracy;
}

/**
 * decideNext is the coordinator's whole policy after a round: go on, retry a round that missed
 * its quorum while retries are left, or stop when the rounds are done, the target accuracy is
 * reached or the retries are spent.
 */
export function decideNext(
  policy: CoordinatorPolicy,
  result: RoundResult,
  retriesUsed: number,
): Decision {
  if (result.outcome === 'failed') {
    if (retriesUsed < policy.maxRoundRetries) return { action: 'retry', reason: result.reason };
    return {
      action: 'stop',
      outcome: 'failed',
      reason: `round ${result.round} failed ${retriesUsed + 1} times, last: ${result.reason}`,
    };
  }
  const accuracy = accuracyOf(result);
  if (
    policy.targetAccuracy !== undefined &&
    accuracy !== undefined &&
    accuracy >= policy.targetAccuracy
  ) {
    return {
      action: 'stop',
      outcome: 'succeeded',
      reason: `target accuracy ${policy.targetAccuracy} reached in round ${result.round} (${accuracy.toFixed(4)})`,
    };
  }
  if (result.round >= policy.rounds) {
    return {
      action: 'stop',
      outcome: 'succeeded',
      reason: `all ${policy.rounds} rounds completed`,
    };
  }
  return { action: 'continue' };
}

/**
 * Coordinator drives one job round by round. It is the one place where rounds are decided,
 * shared by `flotilla simulate` and the Kubernetes controller; how the aggregator is reached
 * and how sites are observed are injected, so it knows neither processes nor Kubernetes.
 *
 * It is restart-safe: it starts from the aggregator's completed round, so a coordinator or an
 * aggregator that restarts loses at most the round in progress.
 */
export class Coordinator {
  private readonly results: RoundResult[] = [];

  constructor(
    private readonly policy: CoordinatorPolicy,
    private readonly driver: RoundDriver,
    private readonly sites: SiteObserver,
    private readonly log: Logger,
    private readonly events: CoordinatorEvents = {},
  ) {}

  /** run drives rounds until the job ends and finishes it on the aggregator. */
  async run(): Promise<JobOutcome> {
    let status = await this.reachAggregator();
    let round = status.completedRound + 1;
    let retries = 0;
    let attempt = 0;
    let decision: Decision | undefined;
    if (status.completedRound >= this.policy.rounds) {
      decision = {
        action: 'stop',
        outcome: 'succeeded',
        reason: `all ${this.policy.rounds} rounds completed`,
      };
    }

    while (!decision || decision.action !== 'stop') {
      let result: RoundResult;
      try {
        // A round already open (the coordinator restarted mid-round) is waited for, not restarted.
        if (status.openRound !== round) await this.startRound(round, attempt);
        result = await this.driver.waitForResult(round);
      } catch (err) {
        if (!(err instanceof AggregatorUnavailable)) throw err;
        this.log.warn({ round, err: err.message }, 'aggregator unavailable, waiting for it');
        status = await this.reachAggregator();
        attempt += 1;
        if (status.completedRound >= round) {
          result = await this.driver.waitForResult(round);
        } else {
          // The round was lost with the aggregator; it runs again from the last checkpoint.
          round = status.completedRound + 1;
          continue;
        }
      }
      status = { ...status, openRound: 0 };

      decision = decideNext(this.policy, result, retries);
      this.results.push(result);
      this.events.roundFinished?.(result, decision);
      this.log.info({ round, outcome: result.outcome, action: decision.action }, 'round decided');
      if (decision.action === 'continue') {
        round += 1;
        retries = 0;
        attempt = 0;
      } else if (decision.action === 'retry') {
        retries += 1;
        attempt += 1;
      }
    }

    const finished = await this.withAggregator(() => this.driver.finish(decision.reason));
    const completed = this.results.filter((r) => r.outcome === 'closed').map((r) => r.round);
    return {
      outcome: decision.outcome,
      reason: decision.reason,
      completedRound: Math.max(status.completedRound, ...completed, 0),
      results: this.results,
      modelPath: finished.modelPath,
    };
  }

  private async startRound(round: number, attempt: number): Promise<void> {
    const healthy = await this.waitForSites();
    const participants = pickParticipants(
      healthy,
      this.policy.sitesPerRound,
      this.policy.seed,
      round,
      attempt,
    );
    this.events.roundStarted?.(round, participants, attempt);
    await this.driver.startRound({
      job: this.policy.job,
      round,
      participants,
      deadlineUnixMs: Date.now() + this.policy.roundTimeoutMs,
      minSites: Math.min(this.policy.minSites, participants.length),
    });
  }

  // Wait (up to one round timeout) until at least the quorum of sites is healthy; after that,
  // start with whoever is there and let the quorum rule decide the round.
  private async waitForSites(): Promise<string[]> {
    const until = Date.now() + this.policy.roundTimeoutMs;
    const known = new Set(this.policy.sites);
    for (;;) {
      const healthy = (await this.sites.healthySites()).filter((s) => known.has(s));
      if (healthy.length >= Math.min(this.policy.sitesPerRound, this.policy.sites.length))
        return healthy;
      if (Date.now() >= until && healthy.length > 0) return healthy;
      if (Date.now() >= until + this.policy.roundTimeoutMs) {
        throw new Error(
          `no site became healthy within ${(2 * this.policy.roundTimeoutMs) / 1000}s`,
        );
      }
      await sleep(200);
    }
  }

  private async reachAggregator(): Promise<AggregatorStatus> {
    return this.withAggregator(() => this.driver.status());
  }

  private async withAggregator<T>(call: () => Promise<T>): Promise<T> {
    const grace = this.policy.aggregatorGraceMs ?? 300_000;
    const until = Date.now() + grace;
    let delay = 100;
    for (;;) {
      try {
        return await call();
      } catch (err) {
        if (!(err instanceof AggregatorUnavailable) || Date.now() > until) throw err;
        await sleep(delay);
        delay = Math.min(delay * 2, 2000);
      }
    }
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
