import { GraphBuilder } from './graph-builder';

/** LossKind names the training losses the engine builds. */
export type LossKind = 'cross-entropy' | 'mse';

/**
 * appendLoss adds the mean loss over the real rows of a batch, written to `output` (a scalar).
 *
 * `labels` are one-hot rows `[batch, classes]`; `mask` is `[batch, 1]`, 1 for a real sample
 * and 0 for a padding row of the last, short batch, so that one static-shape graph serves
 * every batch. Padding rows have all-zero labels and count nowhere.
 *
 * - `cross-entropy`: softmax cross-entropy, `-sum(labels * logsoftmax(logits)) / rows`.
 * - `mse`: mean squared error between logits and labels over the real rows' elements.
 */
export function appendLoss(
  b: GraphBuilder,
  kind: LossKind,
  logits: string,
  labels: string,
  mask: string,
  numClasses: number,
  output: string,
): void {
  const rows = b.op('ReduceSum', [mask], { keepdims: 0 });
  if (kind === 'cross-entropy') {
    const logProbs = b.op('LogSoftmax', [logits], { axis: -1 });
    const picked = b.op('ReduceSum', [b.op('Mul', [labels, logProbs])], { keepdims: 0 });
    b.node('Div', [b.op('Neg', [picked]), rows], {}, { outputs: [output] });
    return;
  }
  const diff = b.op('Sub', [logits, labels]);
  const squared = b.op('Mul', [b.op('Mul', [diff, diff]), mask]);
  const total = b.op('ReduceSum', [squared], { keepdims: 0 });
  const elements = b.op('Mul', [rows, b.scalar(numClasses)]);
  b.node('Div', [total, elements], {}, { outputs: [output] });
}

/**
 * appendCorrectCount adds the number of rows whose arg-max logit is the labelled class,
 * written to `output` (a scalar of the float type). Padding rows (zero labels) never count.
 */
export function appendCorrectCount(
  b: GraphBuilder,
  logits: string,
  labels: string,
  output: string,
): void {
  const predicted = b.op('ArgMax', [logits], { axis: 1, keepdims: 1 });
  const hit = b.op('GatherElements', [labels, predicted], { axis: 1 });
  b.node('ReduceSum', [hit], { keepdims: 0 }, { outputs: [output] });
}
