import * as grpc from '@grpc/grpc-js';
import { NamedTensor } from '../engine/tensor';
import { createLogger, Logger } from '../log';
import { ModelLayout } from '../aggregation/layout';
import { MeanAccumulator } from '../aggregation/mean-accumulator';
import { StagingPool } from '../aggregation/staging-pool';
import {
  createStrategy,
  ServerStrategy,
  StrategyName,
  StrategyParams,
  weightedMetrics,
} from '../aggregation/strategies';
import { ChunkError, ChunkSequence, tensorChunks } from '../protocol/chunks';
import {
  DEV_SITE_METADATA,
  Identity,
  peerIdentity,
  serverCredentials,
  TlsFiles,
} from '../protocol/identity';
import {
  AggregatorStatus,
  CHANNEL_OPTIONS,
  DEFAULT_CHUNK_BYTES,
  JoinRequest,
  loadProtocol,
  ModelPart,
  ModelRequest,
  RoundResult,
  RoundTask,
  StartRoundRequest,
  UPDATE_ENCODINGS,
  UpdateHeader,
  UpdatePart,
  UpdateReceipt,
} from '../protocol/wire';
import type { ServerSurfaceCall } from '@grpc/grpc-js/build/src/server-call';
import { latestCheckpoint, writeCheckpoint } from './checkpoint';
import { invalid, precondition, UpdateError } from './update-error';

/** AggregatorOptions configure one job's aggregator. */
export interface AggregatorOptions {
  job: string;
  /** The global model before round 1 (seeded, so every restart builds the same one). */
  initialModel: NamedTensor[];
  strategy: StrategyName;
  strategyParams?: StrategyParams;
  /** Where checkpoints go; without it the aggregator keeps nothing across restarts. */
  checkpointDir?: string;
  /** The aggregator's TLS identity; required unless `insecureDev` is set. */
  tls?: TlsFiles;
  /** Plain TCP, sites named by a metadata header: for development only. */
  insecureDev?: boolean;
  /** Payload bytes per chunk of the global model it sends (default 1 MiB). */
  chunkBytes?: number;
  /**
   * How many updates may be received at once (default 2). Each one being received holds a
   * model-sized staging buffer, so this bounds the aggregator's memory.
   */
  stagingSlots?: number;
  /** An update stream that sends nothing for this long is dropped. Default 60 s. */
  updateIdleTimeoutMs?: number;
  /** Largest L2 norm an update may have; unset means no bound. */
  maxUpdateNorm?: number;
  /** Evaluates a global model on the held-out set, when the job has one. */
  evaluate?: (global: NamedTensor[]) => Promise<Record<string, number>>;
  /** Writes the final model when the job finishes; returns where it went. */
  exportModel?: (global: NamedTensor[]) => Promise<string>;
  logger?: Logger;
}

interface SiteReport {
  examples: number;
  metrics: Record<string, number>;
}

/** OpenRound is the state of the round being collected. */
interface OpenRound {
  round: number;
  participants: Set<string>;
  deadlineUnixMs: number;
  minSites: number;
  startedAt: number;
  accepted: Map<string, SiteReport>;
  rejected: Array<{ site: string; reason: string }>;
  /** Sites whose update is being received now: a second push from them is a duplicate. */
  receiving: Set<string>;
  timer: NodeJS.Timeout;
  bytesReceived: number;
  bytesSent: number;
  /** Set once the round stops taking updates (closing, closed or failed). */
  sealed: boolean;
}

/**
 * Aggregator is the gRPC server of one job: it serves Federation to the trainers and Control
 * to the coordinator, keeps the global model, folds updates into the round's aggregate,
 * applies the strategy when a round closes and checkpoints the result.
 *
 * Memory: the global model, a float64 aggregate and `stagingSlots` staging buffers, each of
 * model size, plus the strategy's state: O(model), whatever the number of sites.
 */
export class Aggregator {
  private readonly log: Logger;
  private readonly layout: ModelLayout;
  private readonly global: Float32Array;
  private readonly strategy: ServerStrategy;
  private readonly aggregate: MeanAccumulator;
  private readonly staging: StagingPool;
  private readonly server: grpc.Server;
  private readonly chunkBytes: number;

  private completedRound = 0;
  /** Bumped whenever `global` changes, so a download in progress can tell. */
  private globalVersion = 0;
  private open: OpenRound | undefined;
  private finished = false;
  private readonly results: RoundResult[] = [];
  private readonly watchers = new Set<grpc.ServerWritableStream<unknown, RoundResult>>();
  private readonly joined = new Map<
    string,
    Set<grpc.ServerWritableStream<JoinRequest, RoundTask>>
  >();
  private finishedListeners: Array<() => void> = [];

  constructor(private readonly options: AggregatorOptions) {
    if (!options.tls && !options.insecureDev) {
      throw new Error(
        'aggregator: TLS files are required (plain TCP needs the explicit development flag)',
      );
    }
    this.log = (options.logger ?? createLogger('aggregator')).child({ job: options.job });
    this.layout = ModelLayout.ofTensors(options.initialModel);
    this.global = this.layout.flatten(options.initialModel);
    this.strategy = createStrategy(
      options.strategy,
      options.strategyParams ?? {},
      this.layout.size,
    );
    this.aggregate = new MeanAccumulator(this.layout.size);
    this.staging = new StagingPool(this.layout.size, options.stagingSlots ?? 2);
    this.chunkBytes = options.chunkBytes ?? DEFAULT_CHUNK_BYTES;
    this.resume();

    const protocol = loadProtocol();
    this.server = new grpc.Server(CHANNEL_OPTIONS);
    this.server.addService(protocol.Federation.service, {
      join: (call: grpc.ServerWritableStream<JoinRequest, RoundTask>) => this.join(call),
      downloadModel: (call: grpc.ServerWritableStream<ModelRequest, ModelPart>) => {
        void this.downloadModel(call);
      },
      pushUpdate: (
        call: grpc.ServerReadableStream<UpdatePart, UpdateReceipt>,
        callback: grpc.sendUnaryData<UpdateReceipt>,
      ) => {
        void this.pushUpdate(call, callback);
      },
    });
    this.server.addService(protocol.Control.service, {
      startRound: this.unary((call: grpc.ServerUnaryCall<StartRoundRequest, unknown>) => {
        this.requireCoordinator(call);
        return { round: this.startRound(call.request) };
      }),
      getStatus: this.unary((call: grpc.ServerUnaryCall<unknown, unknown>) => {
        this.requireCoordinator(call);
        return this.status();
      }),
      finish: (
        call: grpc.ServerUnaryCall<{ reason: string }, unknown>,
        callback: grpc.sendUnaryData<unknown>,
      ) => {
        void this.finishCall(call, callback);
      },
      watchRounds: (call: grpc.ServerWritableStream<{ fromRound: number }, RoundResult>) =>
        this.watchRounds(call),
    });
  }

  /** listen binds `address` (`host:port`, port 0 picks one) and returns the bound port. */
  listen(address: string): Promise<number> {
    const credentials = this.options.tls
      ? serverCredentials(this.options.tls)
      : grpc.ServerCredentials.createInsecure();
    return new Promise((resolve, reject) => {
      this.server.bindAsync(address, credentials, (err, port) => {
        if (err) reject(new Error(`aggregator: cannot listen on ${address}: ${err.message}`));
        else {
          widenReceiveWindows(this.server);
          this.log.info({ address, port, tls: Boolean(this.options.tls) }, 'aggregator listening');
          resolve(port);
        }
      });
    });
  }

  /** onFinished registers a callback for when a coordinator has finished the job. */
  onFinished(listener: () => void): void {
    if (this.finished) listener();
    else this.finishedListeners.push(listener);
  }

  /** close stops serving at once, cancelling calls in progress. */
  close(): void {
    if (this.open) clearTimeout(this.open.timer);
    this.server.forceShutdown();
  }

  /** globalModel returns a copy of the current global model, as tensors. */
  globalModel(): NamedTensor[] {
    return this.layout.views(new Float32Array(this.global));
  }

  /** aggregateSnapshot copies the round's running aggregate; tests compare it bit for bit. */
  aggregateSnapshot(): { sum: Float64Array; weight: number; updates: number } {
    return this.aggregate.snapshot();
  }

  /** status is what GetStatus answers. */
  status(): AggregatorStatus {
    return {
      job: this.options.job,
      completedRound: this.completedRound,
      connectedSites: [...this.joined.keys()].sort(),
      openRound: this.open && !this.open.sealed ? this.open.round : 0,
      finished: this.finished,
      openRoundReported: this.open?.accepted.size ?? 0,
      openRoundParticipants: this.open?.participants.size ?? 0,
    };
  }

  // Resume from the newest checkpoint, if there is one: the global model, the round and the
  // strategy state are exactly what they were when that round closed.
  private resume(): void {
    const dir = this.options.checkpointDir;
    if (!dir) return;
    const ckpt = latestCheckpoint(dir, (file, err) =>
      this.log.warn({ file, err: err.message }, 'checkpoint unreadable, trying an older one'),
    );
    if (!ckpt) return;
    if (ckpt.job !== this.options.job || ckpt.global.length !== this.layout.size) {
      throw new Error(
        `checkpoint in ${dir}: job "${ckpt.job}" with ${ckpt.global.length} parameters, ` +
          `expected job "${this.options.job}" with ${this.layout.size}`,
      );
    }
    this.global.set(ckpt.global);
    this.strategy.restore(ckpt.state);
    this.completedRound = ckpt.round;
    if (ckpt.result) this.results.push(ckpt.result as RoundResult);
    this.log.info({ round: ckpt.round, dir }, 'resumed from checkpoint');
  }

  private unary<Req, Res>(
    handler: (call: grpc.ServerUnaryCall<Req, Res>) => Res,
  ): grpc.handleUnaryCall<Req, Res> {
    return (call, callback) => {
      try {
        callback(null, handler(call));
      } catch (err) {
        callback(asStatus(err));
      }
    };
  }

  // The identity of a caller comes from its verified certificate, never from a message. On an
  // insecure development connection the site is taken from a metadata header instead.
  private identify(call: ServerSurfaceCall): Identity | undefined {
    if (this.options.insecureDev) {
      const site = call.metadata.get(DEV_SITE_METADATA)[0];
      if (site === undefined) return { kind: 'coordinator', job: this.options.job };
      return { kind: 'site', job: this.options.job, site: String(site) };
    }
    return peerIdentity(call);
  }

  private requireSite(call: ServerSurfaceCall): string {
    const id = this.identify(call);
    if (!id || id.kind !== 'site' || id.job !== this.options.job) {
      throw new UpdateError(
        grpc.status.PERMISSION_DENIED,
        `caller is ${describe(id)}: expected a site certificate of job "${this.options.job}"`,
      );
    }
    return id.site;
  }

  private requireCoordinator(call: ServerSurfaceCall): void {
    const id = this.identify(call);
    if (!id || id.kind !== 'coordinator' || id.job !== this.options.job) {
      throw new UpdateError(
        grpc.status.PERMISSION_DENIED,
        `caller is ${describe(id)}: expected the coordinator certificate of job "${this.options.job}"`,
      );
    }
  }

  // ---- Control ----

  private startRound(req: StartRoundRequest): number {
    if (this.finished) throw precondition('job is finished');
    if (req.job !== this.options.job) {
      throw invalid(`job: got "${req.job}", expected "${this.options.job}"`);
    }
    if (this.open) throw precondition(`round ${this.open.round} is still open`);
    if (req.round !== this.completedRound + 1) {
      throw precondition(
        `round: got ${req.round}, expected ${this.completedRound + 1} (the round after the last completed one)`,
      );
    }
    const participants = new Set(req.participants);
    if (participants.size === 0 || participants.size !== req.participants.length) {
      throw invalid(
        `participants: expected a non-empty list of distinct sites, got [${req.participants.join(', ')}]`,
      );
    }
    if (req.minSites < 1 || req.minSites > participants.size) {
      throw invalid(`minSites: got ${req.minSites}, expected 1..${participants.size}`);
    }
    const wait = req.deadlineUnixMs - Date.now();
    if (wait <= 0)
      throw invalid(`deadline: ${new Date(req.deadlineUnixMs).toISOString()} is in the past`);

    const round = req.round;
    this.aggregate.reset();
    this.open = {
      round,
      participants,
      deadlineUnixMs: req.deadlineUnixMs,
      minSites: req.minSites,
      startedAt: Date.now(),
      accepted: new Map(),
      rejected: [],
      receiving: new Set(),
      timer: setTimeout(() => this.onDeadline(round), wait),
      bytesReceived: 0,
      bytesSent: 0,
      sealed: false,
    };
    this.log.info(
      { round, participants: req.participants, minSites: req.minSites, deadlineMs: wait },
      'round started',
    );
    for (const site of participants) this.sendTask(site);
    return round;
  }

  private watchRounds(call: grpc.ServerWritableStream<{ fromRound: number }, RoundResult>): void {
    try {
      this.requireCoordinator(call);
    } catch (err) {
      failStream(call, err);
      return;
    }
    for (const r of this.results) if (r.round >= call.request.fromRound) call.write(r);
    this.watchers.add(call);
    const drop = (): void => {
      this.watchers.delete(call);
    };
    call.on('cancelled', drop);
    call.on('close', drop);
  }

  private async finishCall(
    call: grpc.ServerUnaryCall<{ reason: string }, unknown>,
    callback: grpc.sendUnaryData<unknown>,
  ): Promise<void> {
    try {
      this.requireCoordinator(call);
      if (this.open && !this.open.sealed)
        this.failRound(this.open, 'job finished while the round was open');
      let modelPath = '';
      if (this.options.exportModel) modelPath = await this.options.exportModel(this.globalModel());
      this.finished = true;
      this.log.info(
        { reason: call.request.reason, completedRound: this.completedRound, modelPath },
        'job finished',
      );
      for (const streams of this.joined.values()) {
        for (const s of streams) {
          s.write({
            job: this.options.job,
            round: this.completedRound,
            deadlineUnixMs: 0,
            finished: true,
          });
          s.end();
        }
      }
      for (const w of this.watchers) w.end();
      callback(null, { modelPath });
      for (const l of this.finishedListeners) l();
      this.finishedListeners = [];
    } catch (err) {
      callback(asStatus(err));
    }
  }

  // ---- Federation ----

  private join(call: grpc.ServerWritableStream<JoinRequest, RoundTask>): void {
    let site: string;
    try {
      site = this.requireSite(call);
      if (call.request.job !== this.options.job) {
        throw invalid(`job: got "${call.request.job}", expected "${this.options.job}"`);
      }
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'join refused');
      failStream(call, err);
      return;
    }
    if (this.finished) {
      call.write({
        job: this.options.job,
        round: this.completedRound,
        deadlineUnixMs: 0,
        finished: true,
      });
      call.end();
      return;
    }
    let streams = this.joined.get(site);
    if (!streams) this.joined.set(site, (streams = new Set()));
    streams.add(call);
    this.log.info({ site }, 'site joined');
    const leave = (): void => {
      if (!streams.delete(call)) return;
      if (streams.size === 0) this.joined.delete(site);
      this.log.info({ site }, 'site left');
    };
    call.on('cancelled', leave);
    call.on('close', leave);
    call.on('error', leave);
    this.sendTask(site);
  }

  // A site gets the open round's task when it takes part and has not reported yet.
  private sendTask(site: string): void {
    const r = this.open;
    if (!r || r.sealed || !r.participants.has(site) || r.accepted.has(site)) return;
    for (const s of this.joined.get(site) ?? []) {
      s.write({
        job: this.options.job,
        round: r.round,
        deadlineUnixMs: r.deadlineUnixMs,
        finished: false,
      });
    }
  }

  private async downloadModel(
    call: grpc.ServerWritableStream<ModelRequest, ModelPart>,
  ): Promise<void> {
    try {
      const site = this.requireSite(call);
      const r = this.open;
      if (!r || r.sealed || call.request.round !== r.round) {
        throw precondition(
          `round: got ${call.request.round}, the open round is ${r && !r.sealed ? r.round : 'none'}`,
        );
      }
      if (!r.participants.has(site))
        throw precondition(`site "${site}" is not a participant of round ${r.round}`);
      const version = this.globalVersion;
      const tensors = this.layout.views(this.global);
      call.write({
        header: { job: this.options.job, round: r.round, tensors: [...this.layout.specs] },
      });
      for (const chunk of tensorChunks(tensors, this.chunkBytes)) {
        // The global model changes in place when a round closes: stop rather than send a mix.
        if (this.globalVersion !== version)
          throw precondition(`round ${r.round} closed during the download`);
        r.bytesSent += chunk.data.length;
        if (!call.write({ chunk })) await waitForDrain(call);
        if (call.cancelled) return;
      }
      call.end();
    } catch (err) {
      failStream(call, err);
    }
  }

  /**
   * pushUpdate receives one site's update.
   *
   * Why nothing bad ever reaches the aggregate: chunks are checked one by one as they arrive
   * (order, name, dtype, shape, offsets, size, finite values) and copied into a staging buffer
   * that belongs to this update alone. Only once the stream has ended, every element has
   * arrived, and the round, participant and duplicate checks still hold, is the staged update
   * folded into the shared aggregate, in one synchronous call that nothing can interleave with.
   * An update rejected at any point before that has written nothing but its own staging
   * buffer, so the aggregate is bit-for-bit what it was.
   *
   * Folding each chunk straight into the shared aggregate and subtracting it back on a late
   * failure was rejected: floating-point addition does not undo exactly ((a + b) - b != a),
   * and the chunk values would have to be kept to subtract them anyway.
   *
   * Memory stays bounded because staging buffers come from a pool of `stagingSlots`: an update
   * that finds none free waits before its first message is read, and HTTP/2 flow control keeps
   * its bytes on the sender.
   */
  private async pushUpdate(
    call: grpc.ServerReadableStream<UpdatePart, UpdateReceipt>,
    callback: grpc.sendUnaryData<UpdateReceipt>,
  ): Promise<void> {
    let site = '';
    let round: OpenRound | undefined;
    let staged: Float32Array | undefined;
    let receivedBytes = 0;
    const reader = new PartReader(call, this.options.updateIdleTimeoutMs ?? 60_000);
    try {
      site = this.requireSite(call);
      // The staging buffer is taken before the first message is read: a stream that waits for
      // one has had nothing pulled, so only its HTTP/2 window (64 KiB) sits in memory.
      staged = await this.staging.acquire();
      const first = await reader.next();
      if (!first?.header) throw invalid('update stream must start with an UpdateHeader');
      const header = first.header;
      round = this.checkHeader(site, header);
      round.receiving.add(site);

      const sequence = new ChunkSequence(this.layout.specs);
      let squaredNorm = 0;
      for (let part = await reader.next(); part; part = await reader.next()) {
        if (!part.chunk) throw invalid('update stream: a second UpdateHeader after the first');
        const chunk = sequence.accept(part.chunk);
        // Copied into this update's own staging buffer first, then checked there: a chunk
        // that fails has written only memory nobody else reads.
        const values = chunk.copyInto(staged);
        // One pass for both checks: a NaN or an infinity makes the chunk's squared norm
        // non-finite (float32 squares cannot overflow a float64), and only then is the chunk
        // scanned again to name the element.
        let chunkNorm = 0;
        for (let i = 0; i < values.length; i++) chunkNorm += values[i] * values[i];
        if (!Number.isFinite(chunkNorm)) {
          const i = values.findIndex((v) => !Number.isFinite(v));
          throw invalid(
            `tensor "${part.chunk.name}": element ${chunk.offset + i} is ${values[i]}, expected a finite number`,
          );
        }
        squaredNorm += chunkNorm;
        receivedBytes = sequence.bytesReceived;
      }
      if (!sequence.complete)
        throw invalid(`update stream ended early: missing ${sequence.missing()}`);
      const norm = Math.sqrt(squaredNorm);
      const bound = this.options.maxUpdateNorm;
      if (bound !== undefined && norm > bound) {
        throw invalid(`update L2 norm ${norm.toPrecision(6)} exceeds the bound ${bound}`);
      }

      // Re-check what may have changed while the stream was arriving.
      if (round.sealed || this.open !== round)
        throw precondition(`round ${round.round} closed before the update was complete`);
      if (round.accepted.has(site))
        throw new UpdateError(
          grpc.status.ALREADY_EXISTS,
          `site "${site}" already reported round ${round.round}`,
        );

      this.aggregate.fold(staged, header.examples);
      round.accepted.set(site, { examples: header.examples, metrics: { ...header.metrics } });
      round.bytesReceived += receivedBytes;
      this.log.info(
        { round: round.round, site, examples: header.examples, bytes: receivedBytes, norm },
        'update accepted',
      );
      callback(null, { round: round.round, bytesReceived: receivedBytes });
      if (round.accepted.size === round.participants.size) void this.closeRound(round);
    } catch (err) {
      const status = asStatus(err);
      this.log.warn(
        { round: round?.round, site, code: grpc.status[status.code], reason: status.details },
        'update rejected',
      );
      if (round && site && this.open === round && !round.sealed) {
        round.rejected.push({ site, reason: status.details });
        round.bytesReceived += receivedBytes;
      }
      reader.stop();
      callback(status);
    } finally {
      if (round) round.receiving.delete(site);
      if (staged) this.staging.release(staged);
    }
  }

  private checkHeader(site: string, header: UpdateHeader): OpenRound {
    if (header.job !== this.options.job)
      throw invalid(`job: got "${header.job}", expected "${this.options.job}"`);
    const r = this.open;
    if (!r || r.sealed || header.round !== r.round) {
      throw precondition(
        `round: got ${header.round}, the open round is ${r && !r.sealed ? r.round : 'none'}`,
      );
    }
    if (!r.participants.has(site)) {
      throw new UpdateError(
        grpc.status.PERMISSION_DENIED,
        `site "${site}" is not a participant of round ${r.round}`,
      );
    }
    if (r.accepted.has(site) || r.receiving.has(site)) {
      throw new UpdateError(
        grpc.status.ALREADY_EXISTS,
        `site "${site}" already sent an update for round ${r.round}`,
      );
    }
    if (!(UPDATE_ENCODINGS as readonly string[]).includes(header.encoding)) {
      throw invalid(
        `encoding: got "${header.encoding}", expected one of ${UPDATE_ENCODINGS.join(', ')}`,
      );
    }
    if (!Number.isSafeInteger(header.examples) || header.examples <= 0) {
      throw invalid(`examples: got ${header.examples}, expected a positive integer`);
    }
    for (const [name, value] of Object.entries(header.metrics)) {
      if (!Number.isFinite(value))
        throw invalid(`metrics.${name}: got ${value}, expected a finite number`);
    }
    return r;
  }

  // ---- closing rounds ----

  private onDeadline(round: number): void {
    const r = this.open;
    if (!r || r.round !== round || r.sealed) return;
    if (r.accepted.size >= r.minSites) void this.closeRound(r);
    else
      this.failRound(
        r,
        `quorum not reached: ${r.accepted.size} of ${r.minSites} required updates by the deadline`,
      );
  }

  private async closeRound(r: OpenRound): Promise<void> {
    if (r.sealed) return;
    r.sealed = true;
    clearTimeout(r.timer);

    const mean = this.aggregate.takeMean();
    this.strategy.step(this.global, mean);
    this.globalVersion += 1;
    this.aggregate.reset();

    let evalMetrics: Record<string, number> = {};
    if (this.options.evaluate) {
      try {
        evalMetrics = await this.options.evaluate(this.layout.views(this.global));
      } catch (err) {
        this.log.error({ round: r.round, err: (err as Error).message }, 'evaluation failed');
      }
    }
    const reports = [...r.accepted.values()];
    const result = this.result(r, 'closed', '', {
      siteMetrics: weightedMetrics(reports),
      evalMetrics,
      examples: reports.reduce((n, s) => n + s.examples, 0),
    });

    // The round counts as completed once its checkpoint is on disk: a crash before that
    // replays the round from the previous checkpoint.
    if (this.options.checkpointDir) {
      const file = writeCheckpoint(this.options.checkpointDir, {
        job: this.options.job,
        round: r.round,
        strategy: this.strategy.name,
        specs: [...this.layout.specs],
        global: this.global,
        state: this.strategy.state(),
        result,
      });
      this.log.info({ round: r.round, file }, 'checkpoint written');
    }
    this.completedRound = r.round;
    this.open = undefined;
    this.log.info(
      {
        round: r.round,
        accepted: result.accepted,
        durationMs: result.durationMs,
        siteMetrics: result.siteMetrics,
        evalMetrics,
      },
      'round closed',
    );
    this.publish(result);
  }

  private failRound(r: OpenRound, reason: string): void {
    r.sealed = true;
    clearTimeout(r.timer);
    this.aggregate.reset();
    this.open = undefined;
    const result = this.result(r, 'failed', reason, {
      siteMetrics: {},
      evalMetrics: {},
      examples: 0,
    });
    this.log.warn({ round: r.round, reason, accepted: result.accepted }, 'round failed');
    this.publish(result);
  }

  private result(
    r: OpenRound,
    outcome: 'closed' | 'failed',
    reason: string,
    m: Pick<RoundResult, 'siteMetrics' | 'evalMetrics' | 'examples'>,
  ): RoundResult {
    return {
      round: r.round,
      outcome,
      participants: [...r.participants].sort(),
      accepted: [...r.accepted.keys()].sort(),
      rejected: [...r.rejected],
      ...m,
      durationMs: Date.now() - r.startedAt,
      bytesReceived: r.bytesReceived,
      bytesSent: r.bytesSent,
      reason,
      siteExamples: Object.fromEntries([...r.accepted].map(([site, s]) => [site, s.examples])),
    };
  }

  // TODO: results live in memory; after a restart only the newest checkpoint's round result is
  // known again, so a coordinator that was away longer sees the earlier rounds' results no more.
  private publish(result: RoundResult): void {
    this.results.push(result);
    // Keep a bounded history: watchers that reconnect need only the recent rounds.
    if (this.results.length > 100) this.results.shift();
    for (const w of this.watchers) w.write(result);
  }
}

/**
 * PartReader pulls one message at a time from a client stream. Not pulling is what applies
 * back-pressure; a stream the client abandons (cancelled, or its connection died) ends the
 * read with an error instead of hanging.
 */
class PartReader {
  private readonly iterator: AsyncIterator<UpdatePart>;
  private cancelled = false;

  constructor(
    private readonly call: grpc.ServerReadableStream<UpdatePart, UpdateReceipt>,
    private readonly idleMs: number,
  ) {
    call.on('cancelled', () => {
      this.cancelled = true;
      call.destroy(new UpdateError(grpc.status.CANCELLED, 'update stream cancelled by the sender'));
    });
    this.iterator = call[Symbol.asyncIterator]();
  }

  async next(): Promise<UpdatePart | undefined> {
    if (this.cancelled)
      throw new UpdateError(grpc.status.CANCELLED, 'update stream cancelled by the sender');
    // A sender that stops sending would hold its staging buffer for good: give up on it.
    const timer = setTimeout(() => {
      const seconds = this.idleMs / 1000;
      this.call.destroy(
        new UpdateError(grpc.status.DEADLINE_EXCEEDED, `no update message for ${seconds}s`),
      );
    }, this.idleMs);
    try {
      const { value, done } = await this.iterator.next();
      return done ? undefined : value;
    } finally {
      clearTimeout(timer);
    }
  }

  /** stop discards whatever the sender still sends. */
  stop(): void {
    this.call.removeAllListeners('data');
    this.call.resume();
  }
}

/**
 * RECEIVE_WINDOW_BYTES is the HTTP/2 window the aggregator grants each stream. It is also what
 * an update waiting for a staging buffer can have in flight, so memory grows by this much per
 * waiting site: 2 MiB keeps that small next to any model while letting a sender run ahead.
 */
const RECEIVE_WINDOW_BYTES = 2 << 20;

/**
 * widenReceiveWindows grants each connection and stream a 2 MiB HTTP/2 receive window instead
 * of the default 64 KiB, so a sender is not stopped every 64 KiB to wait for a window update.
 * grpc-js has no server option for it, so this reaches the HTTP/2 servers it created; if a
 * later grpc-js keeps them elsewhere, nothing happens and the default window stays.
 */
function widenReceiveWindows(server: grpc.Server): void {
  const http2Servers = (server as unknown as { http2Servers?: Map<unknown, unknown> }).http2Servers;
  if (!(http2Servers instanceof Map)) return;
  for (const http2Server of http2Servers.keys()) {
    const emitter = http2Server as import('http2').Http2Server;
    if (
      typeof emitter.on !== 'function' ||
      (emitter as { flotillaWindow?: boolean }).flotillaWindow
    )
      continue;
    (emitter as { flotillaWindow?: boolean }).flotillaWindow = true;
    emitter.on('session', (session: import('http2').ServerHttp2Session) => {
      session.settings({ initialWindowSize: RECEIVE_WINDOW_BYTES });
      session.setLocalWindowSize(RECEIVE_WINDOW_BYTES);
    });
  }
}

/**
 * failStream ends a server stream with the status of `err`. grpc-js turns an 'error' event into
 * the call's status and then ends the call; destroying the stream instead would end it without
 * ever sending that status.
 */
function failStream(call: grpc.ServerWritableStream<unknown, unknown>, err: unknown): void {
  call.emit('error', asStatus(err));
}

function waitForDrain(call: grpc.ServerWritableStream<unknown, unknown>): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      call.off('drain', done);
      call.off('cancelled', done);
      call.off('close', done);
      resolve();
    };
    call.on('drain', done);
    call.on('cancelled', done);
    call.on('close', done);
  });
}

function describe(id: Identity | undefined): string {
  if (!id) return 'anonymous (no Flotilla certificate)';
  return id.kind === 'site'
    ? `site "${id.site}" of job "${id.job}"`
    : `the ${id.kind} of job "${id.job}"`;
}

function asStatus(err: unknown): grpc.StatusObject & Error {
  let code = grpc.status.INTERNAL;
  let details = String((err as Error)?.message ?? err);
  if (err instanceof UpdateError) code = err.code;
  else if (err instanceof ChunkError) code = grpc.status.INVALID_ARGUMENT;
  else details = `internal error: ${details}`;
  return Object.assign(new Error(details), { code, details, metadata: new grpc.Metadata() });
}
