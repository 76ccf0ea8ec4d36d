import { onnx } from 'onnx-proto';
import { appendGradients, assertDifferentiable } from './autodiff';
import { DataType, FloatType, GraphBuilder, ONNX_IR_VERSION, ONNX_OPSET } from './graph-builder';
import { LossKind, appendCorrectCount, appendLoss } from './losses';
import { ForwardModel } from './model';
import { toNumber } from './onnx-read';
import { OptimizerConfig, Proximal, StateSlot, appendOptimizerStep } from './optimizers';
import { GraphFacts, inferShapes, recordConstants } from './shape-inference';

/** ParamSlot is one trainable parameter of a step graph: its input and its updated output. */
export interface ParamSlot {
  name: string;
  dims: number[];
  output: string;
}

/**
 * EvalGraph is a static-batch graph from (params, batch, labels, mask) to (loss, correct):
 * the names of its inputs and outputs, and its model proto.
 */
export interface EvalGraph {
  model: onnx.IModelProto;
  batchSize: number;
  numClasses: number;
  batch: string;
  labels: string;
  mask: string;
  loss: string;
  correct: string;
  params: ParamSlot[];
}

/**
 * TrainGraph is a train-step graph: `params, optimizer state, batch, labels, mask, lr` (plus
 * the global parameters when FedProx is on) -> `loss, correct, new params, new state`.
 */
export interface TrainGraph extends EvalGraph {
  lr: string;
  state: StateSlot[];
  /** Parameter name -> input for its global value; empty without a proximal term. */
  globals: Map<string, string>;
}

/** StepGraphOptions configure buildTrainGraph. */
export interface StepGraphOptions {
  forward: ForwardModel;
  batchSize: number;
  optimizer: OptimizerConfig;
  /** Default `cross-entropy`. */
  loss?: LossKind;
  /** FedProx's mu; 0 or absent leaves the term out. */
  proximalMu?: number;
  /** Default float32; float64 serves the gradient checks. */
  floatType?: FloatType;
}

/** buildTrainGraph turns a forward model into its train-step graph. */
export function buildTrainGraph(options: StepGraphOptions): TrainGraph {
  const { forward, batchSize } = options;
  const b = new GraphBuilder(options.floatType ?? DataType.FLOAT);
  const core = addScoredForward(b, forward, batchSize, options.loss ?? 'cross-entropy');
  const paramNames = core.params.map((p) => p.name);
  const grads = appendGradients(b, core.nodes, core.facts, core.loss, paramNames);

  const lr = b.fresh('lr');
  b.addInput(lr, []);
  let proximal: Proximal | undefined;
  const globals = new Map<string, string>();
  if (options.proximalMu && options.proximalMu > 0) {
    for (const p of core.params) {
      const name = b.fresh(`${p.name}.global`);
      b.addInput(name, p.dims);
      globals.set(p.name, name);
    }
    proximal = { mu: options.proximalMu, globals };
  }
  const step = appendOptimizerStep(b, options.optimizer, core.params, grads, lr, proximal);

  const params = core.params.map((p) => ({ ...p, output: step.newParams.get(p.name)! }));
  for (const p of params) b.addOutput(p.output, p.dims);
  for (const s of step.state) b.addOutput(s.output, s.dims);
  return { ...core.graph(b), lr, state: step.state, globals, params };
}

/** buildEvalGraph builds the graph that scores a batch without changing the parameters. */
export function buildEvalGraph(
  forward: ForwardModel,
  batchSize: number,
  loss: LossKind = 'cross-entropy',
): EvalGraph {
  const b = new GraphBuilder(DataType.FLOAT);
  const core = addScoredForward(b, forward, batchSize, loss);
  return core.graph(b);
}

/** ScoredForward is the forward graph inside a builder, with its loss and correct count. */
interface ScoredForward {
  nodes: onnx.INodeProto[];
  facts: GraphFacts;
  loss: string;
  params: { name: string; dims: number[] }[];
  graph(builder: GraphBuilder): EvalGraph;
}

/**
 * addScoredForward copies the forward graph into the builder with its parameters turned into
 * inputs and the batch size fixed, infers every shape, and appends the loss and the correct
 * count.
 */
function addScoredForward(
  b: GraphBuilder,
  forward: ForwardModel,
  batchSize: number,
  lossKind: LossKind,
): ScoredForward {
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw new Error(`batchSize: must be an integer >= 1, got ${batchSize}`);
  }
  const { nodes, facts, params, numClasses } = copyForward(b, forward, batchSize);

  const labels = b.fresh('labels');
  const mask = b.fresh('mask');
  b.addInput(labels, [batchSize, numClasses]);
  b.addInput(mask, [batchSize, 1]);
  facts.shapes.set(labels, [batchSize, numClasses]);
  facts.shapes.set(mask, [batchSize, 1]);
  const loss = b.fresh('loss');
  const correct = b.fresh('correct');
  const scoringStart = b.nodes.length;
  appendLoss(b, lossKind, forward.outputName, labels, mask, numClasses, loss);
  appendCorrectCount(b, forward.outputName, labels, correct);
  const scoring = b.nodes.slice(scoringStart);
  recordConstants(b.initializers, facts);
  inferShapes(scoring, facts);
  b.addOutput(loss, []);
  b.addOutput(correct, []);

  const opset = Math.max(ONNX_OPSET, forwardOpset(forward.model));
  const graph = (builder: GraphBuilder): EvalGraph => {
    const model = builder.toModel('flotilla-step', opset);
    model.irVersion = Math.max(ONNX_IR_VERSION, toNumber(forward.model.irVersion));
    const slots = params.map((p) => ({ ...p, output: '' }));
    return {
      model,
      batchSize,
      numClasses,
      batch: forward.inputName,
      labels,
      mask,
      loss,
      correct,
      params: slots,
    };
  };
  return { nodes: [...nodes, ...scoring], facts, loss, params, graph };
}

/**
 * copyForward puts the forward graph's nodes and constant initializers into the builder,
 * declares the parameters and a batch of `batchSize` as inputs, and infers every shape.
 */
function copyForward(b: GraphBuilder, forward: ForwardModel, batchSize: number) {
  const graph = forward.model.graph;
  if (!graph) throw new Error('model: has no graph');
  const sourceNodes = graph.node ?? [];
  assertDifferentiable(sourceNodes);

  const facts: GraphFacts = { shapes: new Map(), constants: new Map() };
  const paramNames = new Set(forward.params.map((p) => p.name));
  b.reserve(...sourceNodes.flatMap((n) => [n.name ?? '', ...(n.input ?? []), ...(n.output ?? [])]));
  for (const init of graph.initializer ?? []) {
    b.reserve(init.name ?? '');
    if (!paramNames.has(init.name ?? '')) b.initializers.push(init);
  }
  recordConstants(b.initializers, facts);
  const params = forward.params.map((p) => ({ name: p.name, dims: [...p.dims] }));
  for (const p of params) {
    b.addInput(p.name, p.dims);
    facts.shapes.set(p.name, p.dims);
  }
  const batchDims = [batchSize, ...forward.inputShape];
  b.addInput(forward.inputName, batchDims);
  facts.shapes.set(forward.inputName, batchDims);

  // Copies, because a gradient rule may add an output to a forward node (MaxPool's indices).
  const nodes: onnx.INodeProto[] = sourceNodes.map((n) => ({
    ...n,
    input: [...(n.input ?? [])],
    output: [...(n.output ?? [])],
  }));
  b.nodes.push(...nodes);
  inferShapes(nodes, facts);

  const logitDims = facts.shapes.get(forward.outputName);
  if (!logitDims || logitDims.length !== 2 || logitDims[0] !== batchSize) {
    throw new Error(
      `model output "${forward.outputName}": must be logits [batch, classes], got [${logitDims?.join(', ') ?? 'unknown'}]`,
    );
  }
  return { nodes, facts, params, numClasses: logitDims[1] };
}

/** forwardOpset reads the default-domain opset a forward model was written for. */
export function forwardOpset(model: onnx.IModelProto): number {
  const entry = (model.opsetImport ?? []).find((o) => !o.domain || o.domain === 'ai.onnx');
  return entry ? toNumber(entry.version) : ONNX_OPSET;
}
