import { onnx } from 'onnx-proto';
import { NamedTensor } from './tensor';

/**
 * ForwardModel is a model as the engine receives it: an ONNX inference graph from sample
 * batch to logits, whose trainable parameters are initializers of that graph.
 */
export interface ForwardModel {
  /** The forward graph; `params` are among its initializers. */
  model: onnx.IModelProto;
  /** The graph input that takes a batch, dims `[batch, ...inputShape]`. */
  inputName: string;
  /** The graph output holding the logits, dims `[batch, classes]`. */
  outputName: string;
  /** Dims of one sample, e.g. `[1, 28, 28]`. */
  inputShape: number[];
  /** The trainable initializers with their initial values. */
  params: NamedTensor[];
}
