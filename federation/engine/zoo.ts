import { DataType, GraphBuilder } from './graph-builder';
import { ForwardModel } from './model';
import { SeededRandom } from '../random';
import { NamedTensor, elementCount } from './tensor';

/** ZooModelName names the forward graphs Flotilla ships. */
export type ZooModelName = 'logreg' | 'mlp' | 'cnn';

/** ZOO_MODELS lists the zoo's names, for option validation and help texts. */
export const ZOO_MODELS: readonly ZooModelName[] = ['logreg', 'mlp', 'cnn'];

/** MLP_HIDDEN are the hidden layer widths of the zoo MLP (two ReLU layers, as in FedAvg's 2NN). */
export const MLP_HIDDEN = [200, 200];

/**
 * buildZooModel builds a zoo forward graph for samples of `inputShape` and `numClasses`
 * classes, with weights drawn from `seed`: the same seed gives the same bytes.
 *
 * - `logreg`: flatten, one fully connected layer.
 * - `mlp`: flatten, fully connected 200, 200 with ReLU, then the classes.
 * - `cnn`: NIID-Bench's simple CNN: conv 6@5x5, ReLU, max-pool 2, conv 16@5x5, ReLU,
 *   max-pool 2, fully connected 120, 84 with ReLU, then the classes. It takes `[C, H, W]`
 *   samples; a `[H, W]` shape is read as one channel.
 *
 * Weights and biases start uniform in ±1/√fanIn, the default of PyTorch's Linear and Conv2d:
 * NIID-Bench's published figures come from PyTorch models started that way, and a reproduction
 * that starts elsewhere (Kaiming's larger ±√(6/fanIn), zero biases) trains to other numbers.
 */
export function buildZooModel(
  name: ZooModelName,
  opts: { inputShape: number[]; numClasses: number; seed: number },
): ForwardModel {
  if (!Number.isInteger(opts.numClasses) || opts.numClasses < 2) {
    throw new Error(`numClasses: must be an integer >= 2, got ${opts.numClasses}`);
  }
  if (opts.inputShape.length === 0 || opts.inputShape.some((d) => !Number.isInteger(d) || d < 1)) {
    throw new Error(`inputShape: must be positive integers, got [${opts.inputShape.join(', ')}]`);
  }
  const layers = new LayerStack(
    opts.seed,
    name === 'cnn' && opts.inputShape.length === 2 ? [1, ...opts.inputShape] : opts.inputShape,
  );
  switch (name) {
    case 'logreg':
      layers.flatten();
      layers.dense('fc', opts.numClasses, false);
      break;
    case 'mlp':
      layers.flatten();
      MLP_HIDDEN.forEach((width, i) => layers.dense(`fc${i + 1}`, width, true));
      layers.dense(`fc${MLP_HIDDEN.length + 1}`, opts.numClasses, false);
      break;
    case 'cnn':
      layers.conv('conv1', 6, 5);
      layers.maxPool(2);
      layers.conv('conv2', 16, 5);
      layers.maxPool(2);
      layers.flatten();
      layers.dense('fc1', 120, true);
      layers.dense('fc2', 84, true);
      layers.dense('fc3', opts.numClasses, false);
      break;
    default:
      throw new Error(`model: must be one of ${ZOO_MODELS.join(', ')}, got ${String(name)}`);
  }
  return layers.finish(name, opts.numClasses);
}

/** LayerStack appends layers to a forward graph while tracking the current value and dims. */
class LayerStack {
  private readonly b = new GraphBuilder(DataType.FLOAT);
  private readonly rng: SeededRandom;
  private readonly params: NamedTensor[] = [];
  private current = 'input';
  private dims: number[];

  constructor(
    seed: number,
    private readonly inputShape: number[],
  ) {
    this.rng = new SeededRandom(seed);
    this.dims = [...inputShape];
    this.b.addInput('input', ['batch', ...inputShape]);
  }

  conv(name: string, channels: number, kernel: number): void {
    if (this.dims.length !== 3) {
      throw new Error(
        `inputShape: the cnn needs [channels, height, width], got [${this.inputShape.join(', ')}]`,
      );
    }
    const [inChannels, h, w] = this.dims;
    if (h < kernel || w < kernel) {
      throw new Error(
        `inputShape: [${this.inputShape.join(', ')}] is too small for the cnn's ${kernel}x${kernel} convolutions`,
      );
    }
    const bound = 1 / Math.sqrt(inChannels * kernel * kernel);
    const weight = this.param(`${name}.weight`, [channels, inChannels, kernel, kernel], bound);
    const bias = this.param(`${name}.bias`, [channels], bound);
    const y = this.b.op('Conv', [this.current, weight, bias], { kernel_shape: [kernel, kernel] });
    this.current = this.b.op('Relu', [y]);
    this.dims = [channels, h - kernel + 1, w - kernel + 1];
  }

  maxPool(size: number): void {
    const [c, h, w] = this.dims;
    this.current = this.b.op('MaxPool', [this.current], {
      kernel_shape: [size, size],
      strides: [size, size],
    });
    this.dims = [c, Math.floor(h / size), Math.floor(w / size)];
  }

  flatten(): void {
    this.current = this.b.op('Flatten', [this.current], { axis: 1 });
    this.dims = [elementCount(this.dims)];
  }

  dense(name: string, width: number, relu: boolean): void {
    const fanIn = this.dims[0];
    const bound = 1 / Math.sqrt(fanIn);
    const weight = this.param(`${name}.weight`, [width, fanIn], bound);
    const bias = this.param(`${name}.bias`, [width], bound);
    // Weights are [out, in] as in PyTorch's Linear, hence transB.
    const y = this.b.op('Gemm', [this.current, weight, bias], { transB: 1 });
    this.current = relu ? this.b.op('Relu', [y]) : y;
    this.dims = [width];
  }

  finish(name: string, numClasses: number): ForwardModel {
    this.b.node('Identity', [this.current], {}, { outputs: ['logits'] });
    this.b.addOutput('logits', ['batch', numClasses]);
    return {
      model: this.b.toModel(`flotilla-${name}`),
      inputName: 'input',
      outputName: 'logits',
      inputShape: [...this.inputShape],
      params: this.params,
    };
  }

  private param(name: string, dims: number[], bound: number): string {
    const data = new Float32Array(elementCount(dims));
    for (let i = 0; i < data.length; i++) data[i] = this.rng.uniform(-bound, bound);
    this.params.push({ name, dims, data });
    return this.b.initializer(name, dims, data);
  }
}
