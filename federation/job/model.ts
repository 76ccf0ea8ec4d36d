import * as fs from 'fs';
import { Dataset } from '../data/dataset';
import { ForwardModel } from '../engine/model';
import { loadForwardModel } from '../engine/onnx-import';
import { buildZooModel } from '../engine/zoo';
import { OptimizerConfig } from '../engine/local-trainer';
import { ModelSpec, TrainingSpec } from './manifest';

/**
 * buildModel makes a job's forward model. Zoo models are drawn from the spec's seed, so the
 * aggregator and every restart of it build the same initial global model.
 */
export function buildModel(spec: ModelSpec): ForwardModel {
  if ('zoo' in spec) {
    return buildZooModel(spec.zoo, {
      inputShape: spec.inputShape,
      numClasses: spec.numClasses,
      seed: spec.seed,
    });
  }
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(spec.onnx);
  } catch (err) {
    throw new Error(`spec.model.onnx: cannot read ${spec.onnx}: ${(err as Error).message}`);
  }
  return loadForwardModel(bytes, spec.onnx);
}

/** optimizerOf turns the training spec into the engine's optimizer settings. */
export function optimizerOf(training: TrainingSpec): OptimizerConfig {
  if (training.optimizer === 'adam') return { kind: 'adam', lr: training.learningRate };
  return { kind: 'sgd', lr: training.learningRate, momentum: training.momentum };
}

/** subsetDataset keeps the first `max` samples of a dataset (all when it has fewer). */
export function subsetDataset(
  dataset: Dataset,
  max: number | undefined,
  indices?: Int32Array,
): Dataset {
  const keep =
    indices ??
    Int32Array.from({ length: Math.min(max ?? dataset.count, dataset.count) }, (_, i) => i);
  if (keep.length === dataset.count && !indices) return dataset;
  const size = dataset.sampleShape.reduce((n, d) => n * d, 1);
  const features = new Float32Array(keep.length * size);
  const labels = new Int32Array(keep.length);
  keep.forEach((src, i) => {
    features.set(dataset.features.subarray(src * size, (src + 1) * size), i * size);
    labels[i] = dataset.labels[src];
  });
  return { ...dataset, features, labels, count: keep.length };
}
