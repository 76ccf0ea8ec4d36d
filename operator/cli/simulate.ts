import { ChildProcess, spawn } from 'child_process';
import * as fs from 'fs';
import * as net from 'net';
import * as path from 'path';
import { Command } from 'commander';
import { SingleBar, Presets } from 'cli-progress';
import { loadDataset } from '../../federation/data/dataset';
import { partition } from '../../federation/data/partition';
import { siteDirName, TEST_DIR, writePartition } from '../../federation/data/partition-writer';
import { SeededRandom } from '../../federation/random';
import { ControlDriver } from '../../federation/coordinator/control-driver';
import {
  accuracyOf,
  Coordinator,
  Decision,
  JobOutcome,
} from '../../federation/coordinator/coordinator';
import { FederatedJob, loadManifest } from '../../federation/job/manifest';
import { subsetDataset } from '../../federation/job/model';
import { createLogger, Logger } from '../../federation/log';
import { ControlClient } from '../../federation/protocol/clients';
import { createJobCertificates, readTlsDir, writeTlsDir } from '../../federation/protocol/identity';
import { RoundResult } from '../../federation/protocol/wire';
import { renderRoundPlot } from './simulate-plot';

/** SimulationOptions configure one `flotilla simulate` run. */
export interface SimulationOptions {
  /** Output directory: data, certificates, logs, checkpoints, metrics.json, plot.svg, model. */
  out: string;
  /** The CLI entry the child processes run (default: this repository's bin/flotilla.js). */
  entry?: string;
  /** Show progress bars (default: when stderr is a terminal). */
  progress?: boolean;
  /** Restart a trainer that died, before the next round (default true), as the operator does. */
  restartTrainers?: boolean;
  /** CPU threads per trainer process (default 1: sites share this machine). */
  threadsPerTrainer?: number;
  /** Called when a round starts, with the processes: tests kill them here. */
  onRoundStarted?: (round: number, participants: string[], processes: SimulationProcesses) => void;
  log?: Logger;
}

/** SimulationProcesses gives access to the running processes of a simulation. */
export interface SimulationProcesses {
  aggregator(): ChildProcess | undefined;
  trainer(site: string): ChildProcess | undefined;
}

/** SimulationResult is what a simulation produced. */
export interface SimulationResult extends JobOutcome {
  metricsFile: string;
  plotFile: string;
  /** How many times the aggregator was restarted after dying. */
  aggregatorRestarts: number;
  /** Exit code of each process at the end (`aggregator`, `trainer-<site>`); null if killed. */
  exitCodes: Record<string, number | null>;
}

/** RoundMetrics is one round as metrics.json records it. */
export interface RoundMetrics {
  round: number;
  outcome: string;
  participants: string[];
  accepted: string[];
  rejected: Array<{ site: string; reason: string }>;
  /** Held-out loss and accuracy of the new global model, else the sites' federated evaluation. */
  loss?: number;
  accuracy?: number;
  trainLoss?: number;
  trainAccuracy?: number;
  examples: number;
  durationMs: number;
  bytesReceived: number;
  bytesSent: number;
  reason?: string;
}

/** register adds `flotilla simulate`. */
export function register(program: Command): void {
  program
    .command('simulate')
    .description(
      'Run a FederatedJob on this machine: partition the data, start the aggregator and one ' +
        'trainer process per site over loopback mTLS, and write metrics, a plot and the model',
    )
    .argument('<manifest>', 'FederatedJob manifest (YAML)')
    .option('--out <dir>', 'output directory (default: ./flotilla-sim/<job name>)')
    .option('--no-progress', 'no progress bars')
    .action(async (manifest: string, flags: { out?: string; progress: boolean }) => {
      const job = loadManifest(manifest);
      const out = flags.out ?? path.join('flotilla-sim', job.metadata.name);
      const progress = flags.progress && process.stderr.isTTY;
      // Progress bars and log lines would interleave on the terminal: with bars, only warnings
      // are logged unless FLOTILLA_LOG_LEVEL says otherwise. Processes log to <out>/logs.
      const log = createLogger('simulate');
      if (progress && !process.env.FLOTILLA_LOG_LEVEL) log.level = 'warn';
      const started = Date.now();
      const result = await runSimulation(manifest, { out, progress, log });
      process.stdout.write(summarize(result, Date.now() - started));
      if (result.outcome !== 'succeeded') process.exitCode = 1;
    });
}

/**
 * summarize is what `flotilla simulate` prints at the end: the outcome, the last closed round's
 * accuracy and, because a long benchmark run often peaks before its last round, the best round,
 * the wall time and where the outputs are.
 */
export function summarize(result: SimulationResult, wallMs: number): string {
  const closed = result.results.filter((r) => r.outcome === 'closed');
  const scored = closed.filter((r) => accuracyOf(r) !== undefined);
  const last = closed[closed.length - 1];
  const best = scored.reduce<RoundResult | undefined>(
    (b, r) => (b === undefined || accuracyOf(r)! > accuracyOf(b)! ? r : b),
    undefined,
  );
  const lastAccuracy = last ? accuracyOf(last) : undefined;
  return (
    `${result.outcome}: ${result.reason}\n` +
    `  rounds completed: ${result.completedRound} in ${(wallMs / 1000).toFixed(0)} s` +
    (lastAccuracy !== undefined ? `, accuracy ${lastAccuracy.toFixed(4)}` : '') +
    (best ? ` (best ${accuracyOf(best)!.toFixed(4)} at round ${best.round})` : '') +
    `\n  metrics: ${result.metricsFile}\n  plot:    ${result.plotFile}\n` +
    (result.modelPath ? `  model:   ${result.modelPath}\n` : '')
  );
}

/**
 * runSimulation runs one job on this machine with real processes, real gRPC and mutual TLS,
 * and the same Coordinator the Kubernetes controller uses.
 */
export async function runSimulation(
  manifestFile: string,
  options: SimulationOptions,
): Promise<SimulationResult> {
  const log = options.log ?? createLogger('simulate');
  const job = loadManifest(manifestFile);
  const out = path.resolve(options.out);
  fs.mkdirSync(path.join(out, 'logs'), { recursive: true });

  const heldOut = await prepareData(job, out, log);
  const jobFile = path.join(out, 'job.json');
  fs.writeFileSync(jobFile, JSON.stringify(job, null, 2) + '\n');
  await prepareCertificates(job, out);

  const cluster = new LocalProcesses(out, jobFile, heldOut, options, await freePort(), log);
  cluster.startAggregator();
  const control = new ControlClient({
    address: cluster.address,
    tls: readTlsDir(path.join(out, 'tls', 'coordinator')),
    serverName: 'localhost',
  });
  const driver = new ControlDriver(control);
  const progress = new RoundProgress(job, control, options.progress ?? false);
  try {
    await cluster.waitForAggregator();
    for (const site of job.spec.sites) cluster.startTrainer(site.name);

    const coordinator = new Coordinator(
      {
        job: job.metadata.name,
        sites: job.spec.sites.map((s) => s.name),
        rounds: job.spec.rounds,
        minSites: job.spec.minSites,
        sitesPerRound: job.spec.sitesPerRound,
        roundTimeoutMs: job.spec.roundTimeoutSeconds * 1000,
        targetAccuracy: job.spec.stopping.targetAccuracy,
        maxRoundRetries: job.spec.failurePolicy.maxRoundRetries,
        seed: job.spec.seed,
        aggregatorGraceMs: 120_000,
      },
      driver,
      {
        healthySites: async () => {
          try {
            return (await control.getStatus(2000)).connectedSites;
          } catch {
            return [];
          }
        },
      },
      log,
      {
        roundStarted: (round, participants) => {
          progress.start(round, participants.length);
          options.onRoundStarted?.(round, participants, cluster);
        },
        roundFinished: (result: RoundResult, decision: Decision) => {
          progress.stop(result);
          log.info(
            { round: result.round, outcome: result.outcome, action: decision.action },
            'round finished',
          );
          if (options.restartTrainers ?? true) cluster.restartDeadTrainers();
        },
      },
    );
    const outcome = await coordinator.run();
    await cluster.waitForExit(30_000);

    const rounds = outcome.results.map(roundMetrics);
    const metricsFile = path.join(out, 'metrics.json');
    fs.writeFileSync(
      metricsFile,
      JSON.stringify(
        {
          job: job.metadata.name,
          outcome: outcome.outcome,
          reason: outcome.reason,
          completedRound: outcome.completedRound,
          aggregatorRestarts: cluster.aggregatorRestarts,
          rounds,
        },
        null,
        2,
      ) + '\n',
    );
    const plotFile = path.join(out, 'plot.svg');
    fs.writeFileSync(
      plotFile,
      await renderRoundPlot(
        `${job.metadata.name}: global model per round`,
        rounds.filter((r) => r.outcome === 'closed'),
      ),
    );
    return {
      ...outcome,
      metricsFile,
      plotFile,
      aggregatorRestarts: cluster.aggregatorRestarts,
      exitCodes: cluster.exitCodes(),
    };
  } finally {
    progress.halt();
    driver.close();
    control.close();
    cluster.killAll();
  }
}

function roundMetrics(r: RoundResult): RoundMetrics {
  const heldOut = r.evalMetrics.accuracy !== undefined;
  return {
    round: r.round,
    outcome: r.outcome,
    participants: r.participants,
    accepted: r.accepted,
    rejected: r.rejected,
    loss: heldOut ? r.evalMetrics.loss : r.siteMetrics.eval_loss,
    accuracy: heldOut ? r.evalMetrics.accuracy : r.siteMetrics.eval_accuracy,
    trainLoss: r.siteMetrics.train_loss,
    trainAccuracy: r.siteMetrics.train_accuracy,
    examples: r.examples,
    durationMs: r.durationMs,
    bytesReceived: r.bytesReceived,
    bytesSent: r.bytesSent,
    reason: r.reason || undefined,
  };
}

/**
 * prepareData partitions the dataset into the job's sites when the manifest has a `partition`
 * block, pointing each site at its share; it returns the held-out directory, if any.
 */
async function prepareData(
  job: FederatedJob,
  out: string,
  log: Logger,
): Promise<string | undefined> {
  const p = job.spec.partition;
  if (!p) return job.spec.evaluation?.data;
  const started = Date.now();
  let train = await loadDataset(p.dataset, 'train');
  if (p.maxExamples !== undefined && p.maxExamples < train.count) {
    // A seeded sample, not the first rows: the first rows of a dataset are often not shuffled.
    const order = new SeededRandom(p.seed).permutation(train.count);
    train = subsetDataset(train, undefined, Int32Array.from(order.subarray(0, p.maxExamples)));
  }
  let test;
  try {
    test = subsetDataset(await loadDataset(p.dataset, 'test'), p.maxTestExamples);
  } catch {
    test = undefined;
  }
  const options = { scheme: p.scheme, sites: job.spec.sites.length, alpha: p.alpha, seed: p.seed };
  const shares = partition(train.labels, train.numClasses, options);
  const dataDir = path.join(out, 'data');
  const manifest = await writePartition(dataDir, train, shares, options, test);
  job.spec.sites.forEach((site, i) => {
    site.data = path.join(dataDir, siteDirName(i));
  });
  log.info(
    {
      scheme: p.scheme,
      sites: manifest.sites.map((s) => s.count),
      test: manifest.test?.count ?? 0,
      durationMs: Date.now() - started,
    },
    'dataset partitioned',
  );
  return test ? path.join(dataDir, TEST_DIR) : job.spec.evaluation?.data;
}

async function prepareCertificates(job: FederatedJob, out: string): Promise<void> {
  const certs = await createJobCertificates(
    job.metadata.name,
    job.spec.sites.map((s) => s.name),
  );
  const dir = path.join(out, 'tls');
  writeTlsDir(path.join(dir, 'aggregator'), certs.ca.cert, certs.aggregator);
  writeTlsDir(path.join(dir, 'coordinator'), certs.ca.cert, certs.coordinator);
  for (const [site, pair] of Object.entries(certs.sites))
    writeTlsDir(path.join(dir, 'sites', site), certs.ca.cert, pair);
  // The CA key stays only in the output directory; nothing the processes read contains it.
  fs.writeFileSync(path.join(dir, 'ca.key'), certs.ca.key, { mode: 0o600 });
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as net.AddressInfo).port;
      server.close(() => resolve(port));
    });
  });
}

/**
 * LocalProcesses runs the job's processes on this machine, as the cluster's pods would run:
 * the aggregator restarts when it dies before the job is finished (a Deployment would), and
 * dead trainers are restarted between rounds (as the operator replaces failed pods).
 */
class LocalProcesses implements SimulationProcesses {
  readonly address: string;
  aggregatorRestarts = 0;
  private aggregatorProcess: ChildProcess | undefined;
  private readonly trainers = new Map<string, ChildProcess>();
  private readonly exited = new Map<ChildProcess, Promise<number | null>>();
  private stopping = false;
  private readonly entry: string;
  private readonly readyFile: string;

  constructor(
    private readonly out: string,
    private readonly jobFile: string,
    private readonly heldOut: string | undefined,
    private readonly options: SimulationOptions,
    readonly port: number,
    private readonly log: Logger,
  ) {
    this.address = `127.0.0.1:${port}`;
    this.entry = options.entry ?? path.resolve(__dirname, '..', '..', '..', 'bin', 'flotilla.js');
    this.readyFile = path.join(out, 'aggregator.port');
  }

  aggregator(): ChildProcess | undefined {
    return this.aggregatorProcess;
  }

  trainer(site: string): ChildProcess | undefined {
    return this.trainers.get(site);
  }

  startAggregator(): void {
    fs.rmSync(this.readyFile, { force: true });
    const args = [
      'aggregator',
      '--job',
      this.jobFile,
      '--listen',
      this.address,
      '--tls-dir',
      path.join(this.out, 'tls', 'aggregator'),
      '--checkpoint-dir',
      path.join(this.out, 'checkpoints'),
      '--output',
      this.out,
      '--ready-file',
      this.readyFile,
      '--threads',
      '1',
    ];
    if (this.heldOut) args.push('--eval-data', this.heldOut);
    const child = this.spawn('aggregator', args);
    this.aggregatorProcess = child;
    child.on('exit', (code, signal) => {
      if (this.stopping || this.aggregatorProcess !== child) return;
      if (code === 0) return;
      this.log.warn({ code, signal }, 'aggregator died, restarting it');
      this.aggregatorRestarts += 1;
      setTimeout(() => {
        if (!this.stopping) this.startAggregator();
      }, 200);
    });
  }

  async waitForAggregator(timeoutMs = 60_000): Promise<void> {
    const until = Date.now() + timeoutMs;
    while (!fs.existsSync(this.readyFile)) {
      if (Date.now() > until) {
        throw new Error(
          `aggregator did not start within ${timeoutMs / 1000}s; see ${path.join(this.out, 'logs', 'aggregator.log')}`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  startTrainer(site: string): void {
    const args = [
      'trainer',
      '--job',
      this.jobFile,
      '--site',
      site,
      '--aggregator',
      this.address,
      '--tls-dir',
      path.join(this.out, 'tls', 'sites', site),
      '--server-name',
      'localhost',
      '--provider',
      'cpu',
      '--threads',
      String(this.options.threadsPerTrainer ?? 1),
    ];
    this.trainers.set(site, this.spawn(`trainer-${site}`, args));
  }

  restartDeadTrainers(): void {
    for (const [site, child] of this.trainers) {
      if (child.exitCode !== null && child.exitCode !== 0) {
        this.log.warn({ site, code: child.exitCode }, 'trainer died, restarting it');
        this.startTrainer(site);
      } else if (child.signalCode !== null) {
        this.log.warn({ site, signal: child.signalCode }, 'trainer killed, restarting it');
        this.startTrainer(site);
      }
    }
  }

  /** waitForExit waits for every process to end by itself (the job is finished). */
  async waitForExit(timeoutMs: number): Promise<void> {
    this.stopping = true;
    const all = [this.aggregatorProcess, ...this.trainers.values()].filter(
      (c): c is ChildProcess => c !== undefined,
    );
    const timeout = new Promise((resolve) => setTimeout(resolve, timeoutMs).unref());
    await Promise.race([Promise.all(all.map((c) => this.exited.get(c))), timeout]);
  }

  /** exitCodes reports how the current processes ended (null: still running or killed). */
  exitCodes(): Record<string, number | null> {
    const codes: Record<string, number | null> = {
      aggregator: this.aggregatorProcess?.exitCode ?? null,
    };
    for (const [site, child] of this.trainers) codes[`trainer-${site}`] = child.exitCode;
    return codes;
  }

  killAll(): void {
    this.stopping = true;
    for (const c of [this.aggregatorProcess, ...this.trainers.values()]) {
      if (c && c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    }
  }

  private spawn(name: string, args: string[]): ChildProcess {
    const logFile = fs.openSync(path.join(this.out, 'logs', `${name}.log`), 'a');
    const child = spawn(process.execPath, [this.entry, ...args], {
      stdio: ['ignore', logFile, logFile],
      env: { ...process.env, FLOTILLA_LOG_LEVEL: process.env.FLOTILLA_LOG_LEVEL ?? 'info' },
    });
    fs.closeSync(logFile);
    this.exited.set(child, new Promise((resolve) => child.on('exit', (code) => resolve(code))));
    this.log.debug({ process: name, pid: child.pid }, 'process started');
    return child;
  }
}

/** RoundProgress shows one progress bar per round: updates in, out of the participants. */
class RoundProgress {
  private bar: SingleBar | undefined;
  private poll: NodeJS.Timeout | undefined;

  constructor(
    private readonly job: FederatedJob,
    private readonly control: ControlClient,
    private readonly enabled: boolean,
  ) {}

  start(round: number, participants: number): void {
    if (!this.enabled) return;
    this.halt();
    this.bar = new SingleBar(
      {
        format: `round {round}/${this.job.spec.rounds} [{bar}] {value}/{total} updates | {status}`,
        stream: process.stderr,
        hideCursor: true,
        clearOnComplete: false,
      },
      Presets.shades_classic,
    );
    this.bar.start(participants, 0, { round, status: 'training' });
    this.poll = setInterval(() => {
      this.control.getStatus(1000).then(
        (s) => {
          if (s.openRound === round) this.bar?.update(s.openRoundReported);
        },
        () => undefined,
      );
    }, 500);
  }

  stop(result: RoundResult): void {
    if (!this.bar) return;
    const accuracy = accuracyOf(result);
    const status =
      result.outcome === 'closed'
        ? `closed in ${(result.durationMs / 1000).toFixed(1)}s` +
          (accuracy !== undefined ? `, accuracy ${accuracy.toFixed(4)}` : '')
        : `failed: ${result.reason}`;
    this.bar.update(result.accepted.length, { status });
    this.halt();
  }

  halt(): void {
    if (this.poll) clearInterval(this.poll);
    this.poll = undefined;
    this.bar?.stop();
    this.bar = undefined;
  }
}
