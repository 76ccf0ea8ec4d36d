import * as fs from 'fs';
import * as path from 'path';
import { Command } from 'commander';
import { Aggregator } from '../../federation/aggregator/aggregator';
import { Dataset, loadDataset } from '../../federation/data/dataset';
import { LocalTrainer } from '../../federation/engine/local-trainer';
import { FederatedJob, loadManifest } from '../../federation/job/manifest';
import { buildModel, optimizerOf, subsetDataset } from '../../federation/job/model';
import { createLogger, Logger } from '../../federation/log';
import { readTlsDir } from '../../federation/protocol/identity';

/** AggregatorFlags are the `flotilla aggregator` options as commander hands them over. */
interface AggregatorFlags {
  job: string;
  listen: string;
  tlsDir?: string;
  insecureDev?: boolean;
  checkpointDir?: string;
  output?: string;
  evalData?: string;
  evalMax?: string;
  readyFile?: string;
  stagingSlots: string;
  threads?: string;
}

/** register adds `flotilla aggregator`. */
export function register(program: Command): void {
  program
    .command('aggregator')
    .description(
      "Serve one FederatedJob's aggregator: rounds, updates, checkpoints (gRPC, mutual TLS)",
    )
    .requiredOption('--job <manifest>', 'FederatedJob manifest (YAML or JSON)')
    .option('--listen <host:port>', 'address to serve on (port 0 picks a free one)', '0.0.0.0:7443')
    .option('--tls-dir <dir>', 'ca.crt, tls.crt and tls.key of the aggregator')
    .option('--insecure-dev', 'plain TCP without certificates: development only')
    .option('--checkpoint-dir <dir>', 'checkpoints go here; the newest one is resumed on start')
    .option('--output <dir>', 'where the final model (model.onnx) is written when the job finishes')
    .option(
      '--eval-data <dir>',
      'held-out dataset directory (test split) to evaluate each round on',
    )
    .option('--eval-max <n>', 'evaluate on at most this many held-out examples')
    .option('--ready-file <file>', 'write the bound port here once serving')
    .option('--staging-slots <n>', 'updates received at once; each holds one model of memory', '2')
    .option('--threads <n>', 'CPU threads for evaluation')
    .action(async (flags: AggregatorFlags) => {
      const log = createLogger('aggregator');
      const job = loadManifest(flags.job);
      const aggregator = await startAggregator(job, flags, log);
      await new Promise<void>((resolve) => aggregator.onFinished(resolve));
      // Let the trainers read their "finished" task before the server goes away.
      await new Promise((resolve) => setTimeout(resolve, 500));
      aggregator.close();
      process.exit(0);
    });
}

async function startAggregator(
  job: FederatedJob,
  flags: AggregatorFlags,
  log: Logger,
): Promise<Aggregator> {
  if (!flags.tlsDir && !flags.insecureDev) {
    throw new Error('--tls-dir: required (or --insecure-dev for plain TCP in development)');
  }
  const model = buildModel(job.spec.model);
  const evalDir = flags.evalData ?? job.spec.evaluation?.data;
  const evalMax =
    flags.evalMax !== undefined ? Number(flags.evalMax) : job.spec.evaluation?.maxExamples;
  let heldOut: Dataset | undefined;
  if (evalDir) heldOut = subsetDataset(await loadDataset(evalDir, 'test'), evalMax);

  // One engine instance serves evaluation and the final export; it is made only when needed.
  let engine: LocalTrainer | undefined;
  const getEngine = async (): Promise<LocalTrainer> =>
    (engine ??= await LocalTrainer.create({
      model,
      optimizer: optimizerOf(job.spec.training),
      batchSize: job.spec.training.batchSize,
      seed: job.spec.model.seed,
      threads: flags.threads ? Number(flags.threads) : undefined,
      log,
    }));

  const output = flags.output ?? job.spec.output;
  const aggregator = new Aggregator({
    job: job.metadata.name,
    initialModel: model.params,
    strategy: job.spec.aggregation.strategy,
    strategyParams: job.spec.aggregation.params,
    maxUpdateNorm: job.spec.aggregation.maxUpdateNorm,
    checkpointDir: flags.checkpointDir,
    tls: flags.tlsDir ? readTlsDir(flags.tlsDir) : undefined,
    insecureDev: flags.insecureDev,
    stagingSlots: Number(flags.stagingSlots),
    logger: log,
    evaluate: heldOut
      ? async (global) => {
          const e = await getEngine();
          e.setParams(global);
          const r = await e.evaluate(heldOut);
          return { loss: r.loss, accuracy: r.accuracy, examples: r.examples };
        }
      : undefined,
    exportModel: output
      ? async (global) => {
          const e = await getEngine();
          e.setParams(global);
          fs.mkdirSync(output, { recursive: true });
          const file = path.join(output, 'model.onnx');
          fs.writeFileSync(`${file}.tmp`, e.exportInferenceModel());
          fs.renameSync(`${file}.tmp`, file);
          return file;
        }
      : undefined,
  });
  const port = await aggregator.listen(flags.listen);
  if (flags.readyFile) {
    fs.writeFileSync(`${flags.readyFile}.tmp`, String(port));
    fs.renameSync(`${flags.readyFile}.tmp`, flags.readyFile);
  }
  return aggregator;
}
