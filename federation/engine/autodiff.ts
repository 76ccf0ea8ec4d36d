import { onnx } from 'onnx-proto';
import { GraphBuilder } from './graph-builder';
import { GradientContext, gradientRules, zeros } from './gradient-rules';
import { nodeLabel } from './onnx-read';
import { GraphFacts } from './shape-inference';

/**
 * Operators whose outputs carry no gradient (integer results, comparisons, constants). They
 * may appear in a differentiated graph, but gradients never flow through them.
 */
const NON_DIFFERENTIABLE = new Set([
  'Constant',
  'ArgMax',
  'Equal',
  'Greater',
  'Shape',
  'GatherElements',
]);

/** isSupportedOperator tells whether the engine can differentiate through (or past) an operator. */
export function isSupportedOperator(opType: string): boolean {
  return opType in gradientRules || NON_DIFFERENTIABLE.has(opType);
}

/**
 * assertDifferentiable throws for the first node whose operator has no gradient rule, naming
 * the node and the operator, so that an unsupported model fails before any session starts.
 */
export function assertDifferentiable(nodes: onnx.INodeProto[]): void {
  nodes.forEach((node, index) => {
    if (!isSupportedOperator(node.opType ?? '')) {
      throw new Error(`${nodeLabel(node, index)}: no gradient rule`);
    }
  });
}

/**
 * appendGradients adds reverse-mode differentiation of `loss` (a scalar) with respect to each
 * name in `wrt` to the builder and returns the gradient value name for each of them.
 *
 * `nodes` are the forward nodes, already in the builder and in topological order; a rule may
 * add an output to its forward node (MaxPool's indices), so they must be the builder's own
 * copies. `facts` must hold the static shape of every forward value.
 */
export function appendGradients(
  b: GraphBuilder,
  nodes: onnx.INodeProto[],
  facts: GraphFacts,
  loss: string,
  wrt: string[],
): Map<string, string> {
  assertDifferentiable(nodes);

  // Values that depend on a wrt name, and values the loss depends on: only nodes on both
  // paths get backward nodes.
  const dependsOnWrt = new Set(wrt);
  for (const node of nodes) {
    if (NON_DIFFERENTIABLE.has(node.opType ?? '')) continue;
    if ((node.input ?? []).some((name) => dependsOnWrt.has(name))) {
      dependsOnWrt.add(node.output![0]);
    }
  }
  const feedsLoss = new Set([loss]);
  for (const node of [...nodes].reverse()) {
    if ((node.output ?? []).some((name) => feedsLoss.has(name))) {
      for (const name of node.input ?? []) feedsLoss.add(name);
    }
  }

  const contributions = new Map<string, string[]>();
  const addContribution = (name: string, grad: string) => {
    const list = contributions.get(name) ?? [];
    list.push(grad);
    contributions.set(name, list);
  };
  const gradientOf = (name: string): string | undefined => {
    const list = contributions.get(name);
    if (!list || list.length === 0) return undefined;
    if (list.length > 1) contributions.set(name, [b.op('Sum', list)]);
    return contributions.get(name)![0];
  };
  const shape = (name: string): number[] => {
    const dims = facts.shapes.get(name);
    if (!dims) throw new Error(`value "${name}" has no known shape`);
    return dims;
  };

  addContribution(loss, b.scalar(1, shape(loss)));
  for (const node of [...nodes].reverse()) {
    const outputs = node.output ?? [];
    if (!dependsOnWrt.has(outputs[0]) || !feedsLoss.has(outputs[0])) continue;
    const dY = outputs.map((name) => gradientOf(name));
    if (dY[0] === undefined) continue;

    const inputs = node.input ?? [];
    const context: GradientContext = {
      b,
      node,
      inputs,
      outputs,
      dY,
      needs: inputs.map((name) => name !== '' && dependsOnWrt.has(name)),
      shape,
      facts,
    };
    const grads = gradientRules[node.opType ?? ''](context);
    grads.forEach((grad, i) => {
      if (grad && context.needs[i]) addContribution(inputs[i], grad);
    });
  }

  // A parameter the loss does not depend on gets a zero gradient, so optimizers still run.
  return new Map(wrt.map((name) => [name, gradientOf(name) ?? zeros(b, shape(name))]));
}
