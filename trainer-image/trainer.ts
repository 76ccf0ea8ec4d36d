import * as grpc from '@grpc/grpc-js';
import { Dataset, loadDataset } from '../federation/data/dataset';
import { NoDatasetLayoutError } from '../federation/data/dataset-error';
import { LocalTrainer } from '../federation/engine/local-trainer';
import { ExecutionProvider } from '../federation/engine/session';
import { NamedTensor } from '../federation/engine/tensor';
import { FederatedJob } from '../federation/job/manifest';
import { buildModel, optimizerOf } from '../federation/job/model';
import { Logger } from '../federation/log';
import { Connection, FederationClient } from '../federation/protocol/clients';
import { RoundTask } from '../federation/protocol/wire';

/** TrainerOptions configure one site's trainer process. */
export interface TrainerOptions {
  job: FederatedJob;
  site: string;
  /** The site's dataset directory (train split; a test split, when present, is evaluated). */
  dataDir: string;
  connection: Connection;
  log: Logger;
  executionProvider?: ExecutionProvider;
  threads?: number;
  /** Give up when the aggregator has been unreachable this long. Default 5 minutes. */
  maxUnreachableMs?: number;
}

/** FatalTrainerError ends the trainer with a non-zero exit: retrying cannot fix it. */
export class FatalTrainerError extends Error {
  override readonly name = 'FatalTrainerError';
}

/** Refusals that a reconnect cannot change: wrong certificate, wrong job. */
const FATAL_CODES = new Set([
  grpc.status.PERMISSION_DENIED,
  grpc.status.UNAUTHENTICATED,
  grpc.status.INVALID_ARGUMENT,
]);

/**
 * runTrainer joins the job and serves rounds until the aggregator says the job is finished:
 * for each round task it downloads the global model, trains `localEpochs` on the site's data
 * and pushes the delta. It reconnects with backoff when the aggregator goes away and resolves
 * when the job is finished; it rejects with FatalTrainerError when it cannot go on.
 */
export async function runTrainer(options: TrainerOptions): Promise<void> {
  const { job, log } = options;
  const spec = job.spec;
  const train = await loadDataset(options.dataDir, 'train');
  const test = await loadOptionalTest(options.dataDir);
  const trainer = await LocalTrainer.create({
    model: buildModel(spec.model),
    optimizer: optimizerOf(spec.training),
    batchSize: spec.training.batchSize,
    proximalMu: spec.training.proximalMu > 0 ? spec.training.proximalMu : undefined,
    seed: spec.model.seed,
    executionProvider: options.executionProvider,
    threads: options.threads,
    log,
  });
  log.info({ examples: train.count, testExamples: test?.count ?? 0 }, 'trainer ready');

  const client = new FederationClient(options.connection);
  const session = new TrainerSession(options, client, trainer, train, test);
  try {
    await session.run();
  } finally {
    client.close();
    await trainer.release();
  }
}

async function loadOptionalTest(dir: string): Promise<Dataset | undefined> {
  try {
    return await loadDataset(dir, 'test');
  } catch (err) {
    if (err instanceof NoDatasetLayoutError) return undefined;
    throw err;
  }
}

class TrainerSession {
  /**
   * The task last answered, as round@deadline: a round that is run again (after a failed quorum
   * or an aggregator restart) comes with a new deadline and must be trained again.
   */
  private lastPushed = '';
  private pending: RoundTask | undefined;
  private working = false;
  private lastContact = Date.now();

  constructor(
    private readonly options: TrainerOptions,
    private readonly client: FederationClient,
    private readonly trainer: LocalTrainer,
    private readonly train: Dataset,
    private readonly test: Dataset | undefined,
  ) {}

  async run(): Promise<void> {
    const maxUnreachable = this.options.maxUnreachableMs ?? 300_000;
    let delay = 250;
    for (;;) {
      const outcome = await this.followTasks();
      if (outcome === 'finished') return;
      // TODO: an aggregator that refuses this site's certificate looks like one that is down (the
      // TLS alert is not surfaced by grpc-js), so that case only ends after maxUnreachableMs.
      if (Date.now() - this.lastContact > maxUnreachable) {
        throw new FatalTrainerError(
          `aggregator ${this.options.connection.address} unreachable for ${Math.round(maxUnreachable / 1000)}s ` +
            '(an aggregator that refuses this site certificate looks the same from here)',
        );
      }
      // Jittered exponential backoff, so restarted aggregators are not stormed by every site.
      await sleep(delay * (0.5 + Math.random() / 2));
      delay = outcome === 'connected' ? 250 : Math.min(delay * 2, 5000);
    }
  }

  /** followTasks holds one Join stream open until it ends; it says how it ended. */
  private followTasks(): Promise<'finished' | 'connected' | 'unreachable'> {
    const { job, site, log } = this.options;
    return new Promise((resolve, reject) => {
      const stream = this.client.join(job.metadata.name);
      let gotTask = false;
      stream.on('metadata', () => {
        this.lastContact = Date.now();
        log.info({}, 'joined');
      });
      stream.on('data', (task: RoundTask) => {
        gotTask = true;
        this.lastContact = Date.now();
        if (task.finished) {
          log.info({ round: task.round }, 'job finished');
          stream.cancel();
          this.idle().then(() => resolve('finished'), reject);
          return;
        }
        this.pending = task;
        void this.work().catch((err: Error) => {
          stream.cancel();
          reject(err);
        });
      });
      stream.on('error', (err: grpc.ServiceError) => {
        if (err.code === grpc.status.CANCELLED) return;
        if (FATAL_CODES.has(err.code)) {
          reject(new FatalTrainerError(`aggregator refused site "${site}": ${err.details}`));
          return;
        }
        // A server certificate this site cannot verify is a configuration error, not an outage.
        if (/certificate|SSL|TLS/i.test(err.details)) {
          reject(
            new FatalTrainerError(`cannot verify the aggregator's certificate: ${err.details}`),
          );
          return;
        }
        log.warn(
          { code: grpc.status[err.code], err: err.details },
          'task stream broken, reconnecting',
        );
        resolve(gotTask ? 'connected' : 'unreachable');
      });
      stream.on('end', () => resolve('connected'));
    });
  }

  private async idle(): Promise<void> {
    while (this.working) await sleep(50);
  }

  // One round at a time; a task that arrives while training waits, and only the newest waits.
  private async work(): Promise<void> {
    if (this.working) return;
    this.working = true;
    try {
      while (this.pending) {
        const task = this.pending;
        this.pending = undefined;
        if (taskKey(task) === this.lastPushed) continue;
        await this.trainRound(task);
      }
    } finally {
      this.working = false;
    }
  }

  private async trainRound(task: RoundTask): Promise<void> {
    const { job, log } = this.options;
    const spec = job.spec;
    let global: NamedTensor[];
    try {
      global = (await this.client.downloadModel(job.metadata.name, task.round)).tensors;
    } catch (err) {
      log.warn({ round: task.round, err: (err as Error).message }, 'model download failed');
      return;
    }
    // computeMs covers local training and evaluation only, not the transfers.
    const started = Date.now();
    this.trainer.setParams(global, { resetOptimizer: true });
    let last = { loss: NaN, accuracy: NaN, examples: 0 };
    for (let epoch = 0; epoch < spec.training.localEpochs; epoch++) {
      last = await this.trainer.trainEpoch(this.train, {
        globalParams: spec.training.proximalMu > 0 ? global : undefined,
        shuffleSeed: spec.model.seed + task.round * 1000 + epoch,
      });
    }
    const metrics: Record<string, number> = {
      train_loss: last.loss,
      train_accuracy: last.accuracy,
    };
    if (this.test) {
      const evaluated = await this.trainer.evaluate(this.test);
      Object.assign(metrics, {
        eval_loss: evaluated.loss,
        eval_accuracy: evaluated.accuracy,
        eval_examples: evaluated.examples,
      });
    }
    const computeMs = Date.now() - started;
    const local = this.trainer.params;
    const delta = local.map((t, i) => {
      const g = global[i].data;
      const d = new Float32Array(t.data.length);
      for (let j = 0; j < d.length; j++) d[j] = t.data[j] - g[j];
      return { name: t.name, dims: t.dims, data: d };
    });
    try {
      const receipt = await this.client.pushUpdate(
        {
          job: job.metadata.name,
          round: task.round,
          examples: this.train.count,
          encoding: 'f32',
          metrics: { ...metrics, compute_ms: computeMs },
        },
        delta,
      );
      this.lastPushed = taskKey(task);
      log.info(
        { round: task.round, bytes: receipt.bytesReceived, computeMs, ...metrics },
        'update pushed',
      );
    } catch (err) {
      const e = err as grpc.ServiceError;
      log.warn(
        { round: task.round, code: grpc.status[e.code], err: e.details ?? e.message },
        'update refused',
      );
    }
  }
}

function taskKey(task: RoundTask): string {
  return `${task.round}@${task.deadlineUnixMs}`;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
