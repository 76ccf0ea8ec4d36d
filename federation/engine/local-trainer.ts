import * as ort from 'onnxruntime-node';
import { Dataset, checkSampleShape } from '../data/dataset';
import { Logger, createLogger } from '../log';
import { encodeModel, floatTensor } from './graph-builder';
import { LossKind } from './losses';
import { ForwardModel } from './model';
import { OptimizerConfig, validateOptimizer } from './optimizers';
import { SeededRandom } from '../random';
import { EngineSessions, ExecutionProvider } from './session';
import { NamedTensor, elementCount } from './tensor';
import { EvalGraph, TrainGraph, buildEvalGraph, buildTrainGraph } from './train-graph';

export type { OptimizerConfig } from './optimizers';

/** TrainerConfig configures a LocalTrainer. */
export interface TrainerConfig {
  model: ForwardModel;
  optimizer: OptimizerConfig;
  batchSize: number;
  /** FedProx's mu; 0 or absent trains without the proximal term. */
  proximalMu?: number;
  /** Seeds the batch order (epoch `e` shuffles with `seed + e` unless told otherwise). */
  seed: number;
  /** Default `auto`: CUDA when it loads, else CPU. */
  executionProvider?: ExecutionProvider;
  /** CPU intra-op threads; default every core. */
  threads?: number;
  /** Default `cross-entropy`. */
  loss?: LossKind;
  /** Rows per evaluation step; default max(batchSize, 256). */
  evalBatchSize?: number;
  /** Default a logger for the `engine` component. */
  log?: Logger;
}

/** EpochResult is the mean loss and the accuracy over the examples of one pass. */
export interface EpochResult {
  loss: number;
  accuracy: number;
  examples: number;
}

/**
 * LocalTrainer trains one forward model on local data with the engine's train-step graph.
 *
 * Each graph gets one onnxruntime session for the trainer's life. Parameters and optimizer
 * state stay as onnxruntime tensors between steps: a step's outputs are the next step's
 * inputs, and only `params` copies them out.
 */
export class LocalTrainer {
  private currentParams: Map<string, ort.Tensor>;
  private state: Map<string, ort.Tensor>;
  /** FedProx's anchor: the parameters last given to setParams (or the initial ones). */
  private anchor: Map<string, ort.Tensor>;
  private epochsRun = 0;
  /** The learning rate fed to the next steps; starts at the optimizer's `lr`. */
  private learningRate: number;

  private constructor(
    private readonly config: TrainerConfig,
    private readonly trainGraph: TrainGraph,
    private readonly evalGraph: EvalGraph,
    private readonly trainSession: ort.InferenceSession,
    private readonly evalSession: ort.InferenceSession,
    /** The execution provider both sessions run on. */
    readonly executionProvider: 'cpu' | 'cuda',
  ) {
    this.currentParams = new Map(
      config.model.params.map((p) => [p.name, toOrt(p.dims, new Float32Array(p.data))]),
    );
    this.anchor = this.currentParams;
    this.state = this.zeroState();
    this.learningRate = config.optimizer.lr;
  }

  /** create builds the train-step and evaluation graphs and opens their sessions. */
  static async create(config: TrainerConfig): Promise<LocalTrainer> {
    validateOptimizer(config.optimizer);
    if (config.proximalMu !== undefined && !(config.proximalMu >= 0)) {
      throw new Error(`proximalMu: must be >= 0, got ${config.proximalMu}`);
    }
    const log = config.log ?? createLogger('engine');
    const trainGraph = buildTrainGraph({
      forward: config.model,
      batchSize: config.batchSize,
      optimizer: config.optimizer,
      proximalMu: config.proximalMu,
      loss: config.loss,
    });
    const evalGraph = buildEvalGraph(
      config.model,
      config.evalBatchSize ?? Math.max(config.batchSize, 256),
      config.loss,
    );
    const sessions = new EngineSessions(
      { executionProvider: config.executionProvider, threads: config.threads },
      log,
    );
    const trainSession = await sessions.open(encodeModel(trainGraph.model), 'train-step');
    const evalSession = await sessions.open(encodeModel(evalGraph.model), 'evaluate');
    const provider = sessions.activeProvider ?? 'cpu';
    return new LocalTrainer(config, trainGraph, evalGraph, trainSession, evalSession, provider);
  }

  /** params returns copies of the current parameter values. */
  get params(): NamedTensor[] {
    return this.config.model.params.map((p) => ({
      name: p.name,
      dims: [...p.dims],
      data: new Float32Array(this.currentParams.get(p.name)!.data as Float32Array),
    }));
  }

  /**
   * setParams replaces the parameters (e.g. with the global model of a round); they also
   * become FedProx's anchor. Optimizer state is kept unless `resetOptimizer` is set.
   */
  setParams(params: NamedTensor[], options: { resetOptimizer?: boolean } = {}): void {
    this.currentParams = this.toParamMap(params, 'params');
    this.anchor = this.currentParams;
    if (options.resetOptimizer) this.state = this.zeroState();
  }

  /**
   * setLearningRate changes the learning rate of the following steps (a schedule, or a decay
   * between rounds); the graph takes it as an input, so nothing is rebuilt.
   */
  setLearningRate(lr: number): void {
    if (!(Number.isFinite(lr) && lr > 0)) throw new Error(`lr: must be > 0, got ${lr}`);
    this.learningRate = lr;
  }

  /**
   * trainEpoch runs one pass over the dataset in a seeded random order, one optimizer step
   * per batch (the last batch may be short). `globalParams` sets FedProx's anchor.
   */
  async trainEpoch(
    dataset: Dataset,
    options: { globalParams?: NamedTensor[]; shuffleSeed?: number } = {},
  ): Promise<EpochResult> {
    this.checkDataset(dataset);
    if (options.globalParams) this.anchor = this.toParamMap(options.globalParams, 'globalParams');
    const graph = this.trainGraph;
    const order = new SeededRandom(
      options.shuffleSeed ?? this.config.seed + this.epochsRun,
    ).permutation(dataset.count);
    this.epochsRun++;
    const batch = new BatchBuffers(graph, this.config.model.inputShape);
    const lr = new ort.Tensor('float32', Float32Array.of(this.learningRate), []);
    let lossSum = 0;
    let correct = 0;
    for (let start = 0; start < dataset.count; start += graph.batchSize) {
      const rows = batch.fill(dataset, order, start);
      const feeds: Record<string, ort.Tensor> = { ...batch.feeds(), [graph.lr]: lr };
      for (const p of graph.params) feeds[p.name] = this.currentParams.get(p.name)!;
      for (const s of graph.state) feeds[s.name] = this.state.get(s.name)!;
      for (const [param, input] of graph.globals) feeds[input] = this.anchor.get(param)!;

      // TODO: on CUDA the params and state still cross host memory at every step; keeping
      // them on the device between runs would save two copies of the model per batch.
      const out = await this.trainSession.run(feeds);
      const params = new Map<string, ort.Tensor>();
      for (const p of graph.params) params.set(p.name, out[p.output]);
      this.currentParams = params;
      for (const s of graph.state) this.state.set(s.name, out[s.output]);
      lossSum += (out[graph.loss].data as Float32Array)[0] * rows;
      correct += (out[graph.correct].data as Float32Array)[0];
    }
    return summarize(lossSum, correct, dataset.count);
  }

  /** evaluate scores the current parameters on a dataset without changing them. */
  async evaluate(dataset: Dataset): Promise<EpochResult> {
    this.checkDataset(dataset);
    const graph = this.evalGraph;
    const batch = new BatchBuffers(graph, this.config.model.inputShape);
    let lossSum = 0;
    let correct = 0;
    for (let start = 0; start < dataset.count; start += graph.batchSize) {
      const rows = batch.fill(dataset, undefined, start);
      const feeds: Record<string, ort.Tensor> = batch.feeds();
      for (const p of graph.params) feeds[p.name] = this.currentParams.get(p.name)!;
      const out = await this.evalSession.run(feeds);
      lossSum += (out[graph.loss].data as Float32Array)[0] * rows;
      correct += (out[graph.correct].data as Float32Array)[0];
    }
    return summarize(lossSum, correct, dataset.count);
  }

  /**
   * exportInferenceModel returns the forward model with the current parameters baked in as
   * initializers: a plain ONNX inference model from batch to logits.
   */
  exportInferenceModel(): Uint8Array {
    const source = this.config.model.model;
    const initializers = (source.graph?.initializer ?? []).map((init) => {
      const current = this.currentParams.get(init.name ?? '');
      return current
        ? floatTensor(init.name!, current.dims as number[], current.data as Float32Array)
        : init;
    });
    return encodeModel({ ...source, graph: { ...source.graph, initializer: initializers } });
  }

  /** release frees both sessions; the trainer must not be used afterwards. */
  async release(): Promise<void> {
    await this.trainSession.release();
    await this.evalSession.release();
  }

  private zeroState(): Map<string, ort.Tensor> {
    return new Map(
      this.trainGraph.state.map((s) => [
        s.name,
        toOrt(s.dims, new Float32Array(elementCount(s.dims))),
      ]),
    );
  }

  private toParamMap(params: NamedTensor[], field: string): Map<string, ort.Tensor> {
    const byName = new Map(params.map((p) => [p.name, p]));
    return new Map(
      this.config.model.params.map((expected) => {
        const given = byName.get(expected.name);
        if (!given) throw new Error(`${field}: missing parameter "${expected.name}"`);
        if (
          given.dims.join(',') !== expected.dims.join(',') ||
          given.data.length !== elementCount(expected.dims)
        ) {
          throw new Error(
            `${field}: parameter "${expected.name}" has dims [${given.dims.join(', ')}], expected [${expected.dims.join(', ')}]`,
          );
        }
        return [expected.name, toOrt(expected.dims, new Float32Array(given.data))];
      }),
    );
  }

  private checkDataset(dataset: Dataset): void {
    checkSampleShape(dataset, this.config.model.inputShape);
    if (dataset.numClasses > this.trainGraph.numClasses) {
      throw new Error(
        `dataset ${dataset.source}: has ${dataset.numClasses} classes, but the model predicts ${this.trainGraph.numClasses}`,
      );
    }
  }
}

function toOrt(dims: readonly number[], data: Float32Array): ort.Tensor {
  return new ort.Tensor('float32', data, dims);
}

function summarize(lossSum: number, correct: number, examples: number): EpochResult {
  return {
    loss: examples > 0 ? lossSum / examples : 0,
    accuracy: examples > 0 ? correct / examples : 0,
    examples,
  };
}

/**
 * BatchBuffers are one batch's input tensors, refilled in place for every step so that a pass
 * allocates them once. Rows past the end of the data are padding: zero features, zero labels
 * and mask 0.
 */
class BatchBuffers {
  private readonly features: Float32Array;
  private readonly labels: Float32Array;
  private readonly mask: Float32Array;
  private readonly sampleSize: number;
  private readonly tensors: Record<string, ort.Tensor>;

  constructor(
    private readonly graph: EvalGraph,
    inputShape: number[],
  ) {
    this.sampleSize = elementCount(inputShape);
    this.features = new Float32Array(graph.batchSize * this.sampleSize);
    this.labels = new Float32Array(graph.batchSize * graph.numClasses);
    this.mask = new Float32Array(graph.batchSize);
    this.tensors = {
      [graph.batch]: toOrt([graph.batchSize, ...inputShape], this.features),
      [graph.labels]: toOrt([graph.batchSize, graph.numClasses], this.labels),
      [graph.mask]: toOrt([graph.batchSize, 1], this.mask),
    };
  }

  /** fill copies rows `start..` (through `order` when given) and returns how many are real. */
  fill(dataset: Dataset, order: Uint32Array | undefined, start: number): number {
    const rows = Math.min(this.graph.batchSize, dataset.count - start);
    const size = this.sampleSize;
    const classes = this.graph.numClasses;
    this.labels.fill(0);
    for (let i = 0; i < rows; i++) {
      const index = order ? order[start + i] : start + i;
      this.features.set(dataset.features.subarray(index * size, (index + 1) * size), i * size);
      const label = dataset.labels[index];
      if (!(label >= 0 && label < classes)) {
        throw new Error(
          `dataset ${dataset.source}: label ${label} of sample ${index} is outside [0, ${classes})`,
        );
      }
      this.labels[i * classes + label] = 1;
      this.mask[i] = 1;
    }
    if (rows < this.graph.batchSize) {
      this.features.fill(0, rows * size);
      this.mask.fill(0, rows);
    }
    return rows;
  }

  feeds(): Record<string, ort.Tensor> {
    return { ...this.tensors };
  }
}
