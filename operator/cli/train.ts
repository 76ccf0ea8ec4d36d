import { Command } from 'commander';
import { existsSync } from 'fs';
import { readFile, writeFile } from 'fs/promises';
import { Dataset, loadDataset } from '../../federation/data/dataset';
import { LocalTrainer, OptimizerConfig } from '../../federation/engine/local-trainer';
import { ForwardModel } from '../../federation/engine/model';
import { loadForwardModel } from '../../federation/engine/onnx-import';
import { ExecutionProvider } from '../../federation/engine/session';
import { ZOO_MODELS, ZooModelName, buildZooModel } from '../../federation/engine/zoo';
import { createLogger } from '../../federation/log';

/** TrainFlags are the `flotilla train` options as commander hands them over (strings). */
export interface TrainFlags {
  model: string;
  data: string;
  epochs: string;
  batchSize: string;
  lr?: string;
  optimizer: string;
  momentum: string;
  weightDecay: string;
  seed: string;
  out?: string;
  provider: string;
  threads?: string;
  lrSchedule: string;
}

/** Learning rates that train the zoo reliably when --lr is not given. */
export const DEFAULT_LR: Record<OptimizerConfig['kind'], number> = { sgd: 0.04, adam: 0.001 };

/** The learning-rate schedules `--lr-schedule` accepts. */
export const LR_SCHEDULES = ['constant', 'cosine'] as const;

/**
 * learningRateAt returns the rate for an epoch (1-based). Cosine decay starts at `lr` and
 * ends near 0 at the last epoch; late small steps settle the weights, which is worth about
 * one point of test accuracy for the zoo CNN on Fashion-MNIST over 10 epochs.
 */
export function learningRateAt(
  schedule: (typeof LR_SCHEDULES)[number],
  lr: number,
  epoch: number,
  epochs: number,
): number {
  if (schedule === 'constant') return lr;
  return (lr / 2) * (1 + Math.cos((Math.PI * (epoch - 1)) / epochs));
}

/** register adds `flotilla train`. */
export function register(program: Command): void {
  program
    .command('train')
    .description(
      'Train a zoo model or an ONNX forward model on one dataset directory on this machine, ' +
        'printing loss and accuracy per epoch',
    )
    .requiredOption(
      '--model <name|file.onnx>',
      `one of ${ZOO_MODELS.join(', ')}, or a forward .onnx file`,
    )
    .requiredOption('--data <dir>', 'dataset directory with a train and a test split')
    .option('--epochs <n>', 'passes over the training data', '10')
    .option('--batch-size <n>', 'samples per optimizer step', '64')
    .option(
      '--lr <rate>',
      `learning rate (default ${DEFAULT_LR.sgd} for sgd, ${DEFAULT_LR.adam} for adam)`,
    )
    .option('--optimizer <kind>', 'sgd or adam', 'sgd')
    .option('--momentum <m>', 'SGD momentum', '0.9')
    .option('--weight-decay <wd>', 'L2 weight decay', '0')
    .option('--seed <n>', 'seed of the initial weights and the batch order', '1')
    .option('--out <file.onnx>', 'write the trained model here as an ONNX inference model')
    .option('--provider <provider>', 'auto, cpu or cuda', 'auto')
    .option('--threads <n>', 'CPU threads per step (default: every core)')
    .option(
      '--lr-schedule <schedule>',
      'constant, or cosine: decay the rate each epoch from --lr towards 0',
      'cosine',
    )
    .action(async (flags: TrainFlags) => {
      await trainCommand(flags, (text) => process.stdout.write(text));
    });
}

/**
 * trainCommand trains for the requested epochs, printing one human line per epoch to `print`
 * (JSON logs go to stderr), and writes the trained model when `--out` is given.
 */
export async function trainCommand(
  flags: TrainFlags,
  print: (text: string) => void,
  logDestination: NodeJS.WritableStream = process.stderr,
): Promise<void> {
  const log = createLogger('train', logDestination);
  const epochs = parseInteger('--epochs', flags.epochs, 1);
  const batchSize = parseInteger('--batch-size', flags.batchSize, 1);
  const seed = parseInteger('--seed', flags.seed, 0);
  const optimizer = parseOptimizer(flags);
  const provider = parseChoice('--provider', flags.provider, ['auto', 'cpu', 'cuda'] as const);
  const threads =
    flags.threads === undefined ? undefined : parseInteger('--threads', flags.threads, 1);
  const schedule = parseChoice('--lr-schedule', flags.lrSchedule, LR_SCHEDULES);

  const [train, test] = await Promise.all([
    loadDataset(flags.data, 'train'),
    loadDataset(flags.data, 'test'),
  ]);
  const model = await resolveModel(flags.model, train, test, seed);
  const trainer = await LocalTrainer.create({
    model,
    optimizer,
    batchSize,
    seed,
    executionProvider: provider as ExecutionProvider,
    threads,
    log: createLogger('engine', logDestination),
  });
  log.info(
    {
      model: flags.model,
      data: flags.data,
      trainExamples: train.count,
      testExamples: test.count,
      epochs,
      batchSize,
      optimizer,
    },
    'training started',
  );
  try {
    for (let epoch = 1; epoch <= epochs; epoch++) {
      const started = performance.now();
      trainer.setLearningRate(learningRateAt(schedule, optimizer.lr, epoch, epochs));
      const fit = await trainer.trainEpoch(train);
      const trainMs = performance.now() - started;
      const score = await trainer.evaluate(test);
      const durationMs = Math.round(performance.now() - started);
      print(
        `epoch ${epoch}/${epochs}  loss ${fit.loss.toFixed(4)}  train acc ${percent(fit.accuracy)}  ` +
          `test loss ${score.loss.toFixed(4)}  test acc ${percent(score.accuracy)}  ` +
          `${(durationMs / 1000).toFixed(1)}s (train ${(trainMs / 1000).toFixed(1)}s)\n`,
      );
      log.info(
        {
          epoch,
          loss: fit.loss,
          trainAccuracy: fit.accuracy,
          testLoss: score.loss,
          testAccuracy: score.accuracy,
          trainMs: Math.round(trainMs),
          durationMs,
        },
        'epoch finished',
      );
    }
    if (flags.out) {
      await writeFile(flags.out, trainer.exportInferenceModel());
      log.info({ out: flags.out }, 'model written');
      print(`model written to ${flags.out}\n`);
    }
  } finally {
    await trainer.release();
  }
}

async function resolveModel(
  name: string,
  train: Dataset,
  test: Dataset,
  seed: number,
): Promise<ForwardModel> {
  if ((ZOO_MODELS as readonly string[]).includes(name)) {
    return buildZooModel(name as ZooModelName, {
      inputShape: train.sampleShape,
      numClasses: Math.max(train.numClasses, test.numClasses),
      seed,
    });
  }
  if (name.endsWith('.onnx') || existsSync(name)) {
    if (!existsSync(name)) throw new Error(`--model: file ${name} does not exist`);
    return loadForwardModel(await readFile(name), name);
  }
  throw new Error(
    `--model: must be one of ${ZOO_MODELS.join(', ')} or a path to an .onnx file, got "${name}"`,
  );
}

function parseOptimizer(flags: TrainFlags): OptimizerConfig {
  const kind = parseChoice('--optimizer', flags.optimizer, ['sgd', 'adam'] as const);
  const lr = flags.lr === undefined ? DEFAULT_LR[kind] : parseNumber('--lr', flags.lr);
  const weightDecay = parseNumber('--weight-decay', flags.weightDecay);
  if (kind === 'adam') return { kind, lr, weightDecay };
  return { kind, lr, weightDecay, momentum: parseNumber('--momentum', flags.momentum) };
}

function parseInteger(flag: string, value: string, min: number): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < min)
    throw new Error(`${flag}: must be an integer >= ${min}, got "${value}"`);
  return n;
}

function parseNumber(flag: string, value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n))
    throw new Error(`${flag}: must be a number, got "${value}"`);
  return n;
}

function parseChoice<T extends string>(flag: string, value: string, choices: readonly T[]): T {
  if (!(choices as readonly string[]).includes(value)) {
    throw new Error(`${flag}: must be one of ${choices.join(', ')}, got "${value}"`);
  }
  return value as T;
}

function percent(fraction: number): string {
  return `${(fraction * 100).toFixed(2)}%`;
}
