import { ControlDriver } from '../../federation/coordinator/control-driver';
import {
  AggregatorUnavailable,
  Coordinator,
  CoordinatorPolicy,
  Decision,
  JobOutcome,
  RoundDriver,
} from '../../federation/coordinator/coordinator';
import { Logger } from '../../federation/log';
import { ControlClient } from '../../federation/protocol/clients';
import { TlsFiles } from '../../federation/protocol/identity';
import { AggregatorStatus, RoundResult, StartRoundRequest } from '../../federation/protocol/wire';
import { FederatedJob } from '../api/federatedjob';
import { roundMetrics, RoundMetrics } from './status';

/** JobInterrupted ends a run on the operator's side: the job is suspended or out of time. */
export class JobInterrupted extends Error {
  override readonly name = 'JobInterrupted';
  constructor(
    readonly kind: 'suspended' | 'stopped',
    message: string,
  ) {
    super(message);
  }
}

/** Where to reach a job's aggregator now: its pod's IP and port, or undefined while it has none. */
export type AddressSource = () => string | undefined;

/**
 * PodDriver is the coordinator's RoundDriver for a job on Kubernetes. It dials the aggregator
 * pod's own IP (checking the certificate against the Service name the aggregator's certificate
 * carries), so it needs no cluster DNS; when the aggregator pod is replaced and its IP changes,
 * the next call dials the new one. It is also where the controller interrupts a run: a suspend
 * lets the round in progress finish and refuses the next one; a stop ends the wait at once.
 */
export class PodDriver implements RoundDriver {
  private current: { address: string; client: ControlClient; driver: ControlDriver } | undefined;
  private suspended = false;
  private stopped: JobInterrupted | undefined;
  private readonly stopWaiters = new Set<(err: JobInterrupted) => void>();

  constructor(
    private readonly address: AddressSource,
    private readonly tls: TlsFiles,
    private readonly serverName: string,
  ) {}

  /** suspendAfterRound lets the round in progress end, then refuses to start another. */
  suspendAfterRound(): void {
    this.suspended = true;
  }

  /** stop ends the run now: every call in progress or to come rejects with JobInterrupted. */
  stop(message: string): void {
    if (this.stopped) return;
    this.stopped = new JobInterrupted('stopped', message);
    for (const reject of this.stopWaiters) reject(this.stopped);
    this.stopWaiters.clear();
  }

  async status(): Promise<AggregatorStatus> {
    return this.interruptible(() => this.driver().status());
  }

  async startRound(request: StartRoundRequest): Promise<void> {
    this.checkInterrupted(true);
    return this.interruptible(() => this.driver().startRound(request));
  }

  waitForResult(round: number): Promise<RoundResult> {
    return this.interruptible(() => this.driver().waitForResult(round));
  }

  finish(reason: string): Promise<{ modelPath: string }> {
    return this.interruptible(() => this.driver().finish(reason));
  }

  /** connectedSites are the sites with a trainer joined to the aggregator now. */
  async connectedSites(): Promise<string[]> {
    this.checkInterrupted(true);
    try {
      return (await this.status()).connectedSites;
    } catch (err) {
      if (err instanceof JobInterrupted) throw err;
      return [];
    }
  }

  /** close drops the connection to the aggregator. */
  close(): void {
    this.current?.driver.close();
    this.current?.client.close();
    this.current = undefined;
  }

  private checkInterrupted(beforeRound: boolean): void {
    if (this.stopped) throw this.stopped;
    if (beforeRound && this.suspended) {
      throw new JobInterrupted('suspended', 'suspended by spec.suspend');
    }
  }

  private async interruptible<T>(call: () => Promise<T>): Promise<T> {
    this.checkInterrupted(false);
    let onStop: ((err: JobInterrupted) => void) | undefined;
    const stopped = new Promise<never>((_, reject) => {
      onStop = reject;
      this.stopWaiters.add(reject);
    });
    try {
      return await Promise.race([call(), stopped]);
    } finally {
      this.stopWaiters.delete(onStop!);
    }
  }

  private driver(): ControlDriver {
    const address = this.address();
    if (address === undefined) throw new AggregatorUnavailable('the aggregator pod has no IP yet');
    if (this.current?.address === address) return this.current.driver;
    this.close();
    const client = new ControlClient({ address, tls: this.tls, serverName: this.serverName });
    this.current = { address, client, driver: new ControlDriver(client) };
    return this.current.driver;
  }
}

/** RunnerEvents tell the controller what a run did, so it can write status and Events. */
export interface RunnerEvents {
  roundStarted(round: number, participants: string[], attempt: number): void;
  /** overheadMs is the part of the round's wall time the aggregator did not account for. */
  roundFinished(result: RoundResult, decision: Decision, overheadMs: number): void;
  ended(outcome: JobOutcome | Error): void;
}

/** policyOf is the coordinator's policy for a job, from its spec. */
export function policyOf(job: FederatedJob): CoordinatorPolicy {
  const s = job.spec;
  return {
    job: job.metadata.name,
    sites: s.sites.map((site) => site.name),
    rounds: s.rounds,
    minSites: s.minSites,
    sitesPerRound: s.sitesPerRound ?? s.sites.length,
    roundTimeoutMs: s.roundTimeoutSeconds * 1000,
    targetAccuracy: s.stopping.targetAccuracy,
    maxRoundRetries: s.failurePolicy.maxRoundRetries,
    seed: s.seed,
  };
}

/**
 * RoundRunner drives one job's rounds with the shared Coordinator while the controller
 * reconciles around it. It holds no state the job needs to survive: the coordinator starts
 * from the aggregator's completed round, so a new runner (after an operator restart) picks
 * the job up where the aggregator stands.
 */
export class RoundRunner {
  /** The round in progress and its participants, for status. */
  current: { round: number; participants: string[]; attempt: number } | undefined;
  /** Results seen by this run, oldest first. */
  readonly results: RoundResult[] = [];
  /** The closed rounds of this run in status form, stamped when their result arrived. */
  readonly rounds: RoundMetrics[] = [];
  /** When this run started its first round. */
  firstRoundAt: Date | undefined;
  /** How the run ended, once it has. */
  outcome: JobOutcome | Error | undefined;

  private roundMark = 0;

  constructor(
    readonly job: FederatedJob,
    readonly driver: PodDriver,
    private readonly log: Logger,
    private readonly events: RunnerEvents,
  ) {}

  /**
   * start runs the coordinator in the background; events report its progress. Rounds from
   * `catchUpFrom` on that closed while no runner watched (the operator was down) are read
   * back from the aggregator first, so status.history has no gap.
   */
  start(catchUpFrom: number): void {
    this.catchUp(catchUpFrom)
      .catch((err: Error) => this.log.warn({ err: err.message }, 'round catch-up failed'))
      .finally(() => this.run());
  }

  // TODO: the aggregator keeps the last 100 results in memory only; rounds that closed while
  // no operator watched and are older than that (or older than an aggregator restart) never
  // reach status.history.
  private async catchUp(fromRound: number): Promise<void> {
    const status = await this.driver.status();
    for (let round = fromRound; round <= status.completedRound; round++) {
      const result = await Promise.race([
        this.driver.waitForResult(round),
        new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), 5000).unref()),
      ]);
      // The aggregator keeps recent results only; an older one is gone for good.
      if (!result) continue;
      this.results.push(result);
      if (result.outcome === 'closed') this.rounds.push(roundMetrics(result, new Date()));
      this.log.info({ round }, 'round read back from the aggregator');
    }
  }

  private run(): void {
    const coordinator = new Coordinator(
      policyOf(this.job),
      this.driver,
      { healthySites: () => this.driver.connectedSites() },
      this.log,
      {
        roundStarted: (round, participants, attempt) => {
          const now = Date.now();
          if (this.roundMark === 0) this.roundMark = now;
          this.firstRoundAt ??= new Date(now);
          this.current = { round, participants, attempt };
          this.events.roundStarted(round, participants, attempt);
        },
        roundFinished: (result, decision) => {
          const now = Date.now();
          // From the end of the previous round (or the first start) to this result: the
          // aggregator's share is its own duration, the rest is the operator's and gRPC's.
          const cycleMs = this.roundMark === 0 ? result.durationMs : now - this.roundMark;
          this.roundMark = now;
          this.results.push(result);
          if (result.outcome === 'closed') this.rounds.push(roundMetrics(result, new Date(now)));
          this.current = undefined;
          this.events.roundFinished(result, decision, Math.max(0, cycleMs - result.durationMs));
        },
      },
    );
    coordinator.run().then(
      (outcome) => this.end(outcome),
      (err: Error) => this.end(err),
    );
  }

  private end(outcome: JobOutcome | Error): void {
    this.outcome = outcome;
    this.current = undefined;
    this.driver.close();
    this.events.ended(outcome);
  }
}
