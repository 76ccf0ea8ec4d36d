import * as grpc from '@grpc/grpc-js';
import { ControlClient } from '../protocol/clients';
import { AggregatorStatus, RoundResult, StartRoundRequest } from '../protocol/wire';
import { AggregatorUnavailable, RoundDriver } from './coordinator';

/** Status codes that mean "the aggregator is not reachable now", not "it said no". */
const UNREACHABLE = new Set([
  grpc.status.UNAVAILABLE,
  grpc.status.DEADLINE_EXCEEDED,
  grpc.status.CANCELLED,
]);

function translate(err: unknown): Error {
  const code = (err as grpc.ServiceError).code;
  if (code !== undefined && UNREACHABLE.has(code))
    return new AggregatorUnavailable((err as Error).message);
  return err as Error;
}

/**
 * ControlDriver is the coordinator's RoundDriver over the Control service. It keeps one
 * WatchRounds stream open and remembers results by round; when the stream breaks, waiters are
 * told the aggregator is unavailable and the next call opens a new stream.
 */
export class ControlDriver implements RoundDriver {
  private readonly results = new Map<number, RoundResult>();
  private readonly waiters = new Map<
    number,
    Array<{ resolve: (r: RoundResult) => void; reject: (e: Error) => void }>
  >();
  private watch: grpc.ClientReadableStream<RoundResult> | undefined;

  constructor(private readonly control: ControlClient) {}

  async status(): Promise<AggregatorStatus> {
    try {
      return await this.control.getStatus(5000);
    } catch (err) {
      throw translate(err);
    }
  }

  async startRound(request: StartRoundRequest): Promise<void> {
    this.ensureWatch(request.round);
    try {
      await this.control.startRound(request);
    } catch (err) {
      throw translate(err);
    }
  }

  waitForResult(round: number): Promise<RoundResult> {
    const known = this.results.get(round);
    if (known) return Promise.resolve(known);
    this.ensureWatch(round);
    return new Promise((resolve, reject) => {
      const list = this.waiters.get(round) ?? [];
      list.push({ resolve, reject });
      this.waiters.set(round, list);
    });
  }

  async finish(reason: string): Promise<{ modelPath: string }> {
    try {
      return await this.control.finish(reason);
    } catch (err) {
      throw translate(err);
    }
  }

  /** close stops watching. */
  close(): void {
    this.watch?.cancel();
    this.watch = undefined;
  }

  private ensureWatch(fromRound: number): void {
    if (this.watch) return;
    const stream = this.control.watchRounds(fromRound);
    this.watch = stream;
    stream.on('data', (result: RoundResult) => {
      // A failed attempt and its retry share a round number: only the newest result counts.
      this.results.set(result.round, result);
      const list = this.waiters.get(result.round) ?? [];
      this.waiters.delete(result.round);
      for (const w of list) w.resolve(result);
      // Keep the failed result only until its retry's result replaces it.
      if (result.outcome === 'failed') this.results.delete(result.round);
    });
    const broken = (err?: Error): void => {
      if (this.watch !== stream) return;
      this.watch = undefined;
      const reason = new AggregatorUnavailable(
        `round results stream ended: ${err?.message ?? 'closed by the aggregator'}`,
      );
      for (const list of this.waiters.values()) for (const w of list) w.reject(reason);
      this.waiters.clear();
    };
    stream.on('error', broken);
    stream.on('end', () => broken());
  }
}
