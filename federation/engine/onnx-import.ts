import { onnx } from 'onnx-proto';
import { assertDifferentiable } from './autodiff';
import { DataType } from './graph-builder';
import { ForwardModel } from './model';
import { tensorDims, tensorValues, valueDims } from './onnx-read';
import { forwardOpset } from './train-graph';
import { NamedTensor } from './tensor';

/** MIN_IMPORT_OPSET is the oldest opset accepted: from 13 on, Softmax and ReduceSum read as the engine expects. */
export const MIN_IMPORT_OPSET = 13;

/**
 * loadForwardModel reads a user-supplied forward ONNX model (e.g. exported from PyTorch)
 * whose trainable parameters are float initializers. `source` names the model in errors.
 *
 * The model must have one input besides its initializers, `[batch, ...sample dims]` with only
 * the batch dim symbolic, and its first output must be the logits `[batch, classes]`.
 * Every float initializer of rank >= 1 that a node reads is trained.
 */
export function loadForwardModel(bytes: Uint8Array, source: string): ForwardModel {
  let model: onnx.ModelProto;
  try {
    model = onnx.ModelProto.decode(bytes);
  } catch (err) {
    throw new Error(`${source}: not an ONNX model (${(err as Error).message})`);
  }
  // Decoded messages are full GraphProto instances: repeated fields are arrays, never null.
  const graph = model.graph as onnx.GraphProto | null;
  if (!graph || graph.node.length === 0) throw new Error(`${source}: the model has no graph nodes`);
  const opset = forwardOpset(model);
  if (opset < MIN_IMPORT_OPSET) {
    throw new Error(`${source}: opset ${opset} is not supported, expected >= ${MIN_IMPORT_OPSET}`);
  }
  try {
    assertDifferentiable(graph.node);
  } catch (err) {
    throw new Error(`${source}: ${(err as Error).message}`);
  }

  const initializerNames = new Set(graph.initializer.map((t) => t.name));
  const dataInputs = graph.input.filter((i) => !initializerNames.has(i.name));
  if (dataInputs.length !== 1) {
    throw new Error(
      `${source}: must have exactly one input besides its initializers, got ${dataInputs.length} (${dataInputs.map((i) => i.name).join(', ')})`,
    );
  }
  const input = dataInputs[0];
  const inputShape = valueDims(input).slice(1);
  if (inputShape.length === 0 || inputShape.some((d) => d < 1)) {
    throw new Error(
      `${source}: input "${input.name}" must be [batch, fixed sample dims], got [${valueDims(input)
        .map((d) => (d < 0 ? '?' : d))
        .join(', ')}]`,
    );
  }
  if (graph.output.length === 0) throw new Error(`${source}: the model has no outputs`);

  const consumed = new Set(graph.node.flatMap((n) => n.input));
  const params: NamedTensor[] = graph.initializer
    .filter(
      (t) =>
        t.dataType === DataType.FLOAT && tensorDims(t).length >= 1 && consumed.has(t.name ?? ''),
    )
    .map((t) => ({
      name: t.name ?? '',
      dims: tensorDims(t),
      data: Float32Array.from(tensorValues(t)),
    }));
  if (params.length === 0)
    throw new Error(`${source}: the model has no float initializers to train`);

  return {
    model,
    inputName: input.name ?? '',
    outputName: graph.output[0].name ?? '',
    inputShape,
    params,
  };
}
