/** @jest-environment ./test/unit/engine/ort-environment.js */
import { Writable } from 'stream';
import { Dataset } from '../../../federation/data/dataset';
import { DataType, GraphBuilder, encodeModel } from '../../../federation/engine/graph-builder';
import { LocalTrainer } from '../../../federation/engine/local-trainer';
import { loadForwardModel } from '../../../federation/engine/onnx-import';
import { SeededRandom } from '../../../federation/random';
import { buildTrainGraph } from '../../../federation/engine/train-graph';
import { buildZooModel } from '../../../federation/engine/zoo';
import { createLogger } from '../../../federation/log';

/**
 * exportedModel builds bytes shaped like a PyTorch export: parameters as initializers, a
 * symbolic batch dim, a Constant node holding the Reshape target, a scalar float constant
 * that is not a parameter, and an extra operator spliced in where asked.
 */
function exportedModel(options: { opset?: number; extraOp?: string } = {}): Uint8Array {
  const rng = new SeededRandom(4);
  const random = (n: number) => Array.from({ length: n }, () => rng.uniform(-0.3, 0.3));
  const b = new GraphBuilder(DataType.FLOAT);
  b.addInput('x', ['N', 1, 6, 6]);
  b.initializer('conv.weight', [2, 1, 3, 3], random(18));
  b.initializer('conv.bias', [2], random(2));
  b.initializer('fc.weight', [3, 32], random(96));
  b.initializer('fc.bias', [3], random(3));
  b.initializer('scale', [], [0.5]);
  let h = b.node(
    'Conv',
    ['x', 'conv.weight', 'conv.bias'],
    { kernel_shape: [3, 3] },
    { name: 'conv1' },
  )[0];
  h = b.op('Relu', [h]);
  if (options.extraOp) {
    b.node(options.extraOp, [h], { size: 3 }, { outputs: ['lrn_out'], name: 'conv3' });
    h = 'lrn_out';
  }
  h = b.op('Mul', [h, 'scale']);
  // x.view(x.size(0), -1) as exporters write it: Shape -> Gather -> Unsqueeze -> Concat.
  const [rest] = b.node('Constant', [], {
    value: { name: '', dims: [1], dataType: DataType.INT64, int64Data: [-1] },
  });
  const [first] = b.node('Constant', [], {
    value: { name: '', dims: [], dataType: DataType.INT64, int64Data: [0] },
  });
  const batch = b.op('Gather', [b.op('Shape', [h]), first], { axis: 0 });
  const target = b.op('Concat', [b.op('Unsqueeze', [batch, b.int64s([0])]), rest], { axis: 0 });
  h = b.op('Reshape', [h, target]);
  b.node('Gemm', [h, 'fc.weight', 'fc.bias'], { transB: 1 }, { outputs: ['y'] });
  b.addOutput('y', ['N', 3]);
  return encodeModel(b.toModel('exported', options.opset));
}

function imageDataset(count: number, seed: number): Dataset {
  const rng = new SeededRandom(seed);
  const features = Float32Array.from({ length: count * 36 }, () => rng.next());
  const labels = Int32Array.from({ length: count }, (_, i) => {
    // The class is which third of the image is brightest: learnable by the small CNN.
    const sums = [0, 1, 2].map((part) =>
      features.subarray(i * 36 + part * 12, i * 36 + part * 12 + 12).reduce((a, v) => a + v, 0),
    );
    return sums.indexOf(Math.max(...sums));
  });
  return {
    features,
    sampleShape: [1, 6, 6],
    labels,
    numClasses: 3,
    count,
    source: 'synthetic-images',
  };
}

describe('loadForwardModel', () => {
  test('reads input, output, sample shape and the float initializers that are parameters', () => {
    const model = loadForwardModel(exportedModel(), 'model.onnx');
    expect(model.inputName).toBe('x');
    expect(model.outputName).toBe('y');
    expect(model.inputShape).toEqual([1, 6, 6]);
    expect(model.params.map((p) => [p.name, p.dims])).toEqual([
      ['conv.weight', [2, 1, 3, 3]],
      ['conv.bias', [2]],
      ['fc.weight', [3, 32]],
      ['fc.bias', [3]],
    ]);
  });

  test('an imported model trains through the same engine path and its loss falls', async () => {
    const model = loadForwardModel(exportedModel(), 'model.onnx');
    const data = imageDataset(256, 1);
    const trainer = await LocalTrainer.create({
      model,
      optimizer: { kind: 'sgd', lr: 0.1, momentum: 0.9 },
      batchSize: 16,
      seed: 1,
      log: createLogger('engine', new Writable({ write: (_c, _e, done) => done() })),
    });
    try {
      const before = await trainer.evaluate(data);
      for (let epoch = 0; epoch < 5; epoch++) await trainer.trainEpoch(data);
      const after = await trainer.evaluate(data);
      expect(after.loss).toBeLessThan(before.loss * 0.8);
      // The exported model is the user's graph with trained values in place.
      const reloaded = loadForwardModel(trainer.exportInferenceModel(), 'trained.onnx');
      expect(reloaded.params.map((p) => Array.from(p.data))).toEqual(
        trainer.params.map((p) => Array.from(p.data)),
      );
    } finally {
      await trainer.release();
    }
  });

  test('an unsupported operator fails naming the operator and the node', () => {
    expect(() => loadForwardModel(exportedModel({ extraOp: 'LRN' }), 'model.onnx')).toThrow(
      'model.onnx: node "conv3" (op LRN): no gradient rule',
    );
  });

  test('the train-step builder names an unsupported node too', () => {
    const zoo = buildZooModel('logreg', { inputShape: [4], numClasses: 2, seed: 1 });
    const graph = zoo.model.graph!;
    graph.node = [
      { name: 'conv3', opType: 'LRN', input: ['input'], output: ['lrn'] },
      ...graph.node!,
    ];
    expect(() =>
      buildTrainGraph({ forward: zoo, batchSize: 4, optimizer: { kind: 'sgd', lr: 0.1 } }),
    ).toThrow('node "conv3" (op LRN): no gradient rule');
  });

  test('bytes that are not ONNX, and opsets before 13, are refused with the source named', () => {
    expect(() => loadForwardModel(Uint8Array.from([255, 255, 255, 255, 7]), 'junk.onnx')).toThrow(
      /^junk\.onnx: not an ONNX model/,
    );
    expect(() => loadForwardModel(exportedModel({ opset: 11 }), 'old.onnx')).toThrow(
      'old.onnx: opset 11 is not supported, expected >= 13',
    );
  });
});

describe('buildZooModel', () => {
  test('the simple CNN on 28x28 images has NIID-Bench layer sizes', () => {
    const cnn = buildZooModel('cnn', { inputShape: [1, 28, 28], numClasses: 10, seed: 1 });
    expect(cnn.params.map((p) => [p.name, p.dims])).toEqual([
      ['conv1.weight', [6, 1, 5, 5]],
      ['conv1.bias', [6]],
      ['conv2.weight', [16, 6, 5, 5]],
      ['conv2.bias', [16]],
      ['fc1.weight', [120, 256]],
      ['fc1.bias', [120]],
      ['fc2.weight', [84, 120]],
      ['fc2.bias', [84]],
      ['fc3.weight', [10, 84]],
      ['fc3.bias', [10]],
    ]);
  });

  test('the same seed gives the same model bytes; another seed other weights', () => {
    const build = (seed: number) =>
      encodeModel(buildZooModel('mlp', { inputShape: [1, 28, 28], numClasses: 10, seed }).model);
    expect(Buffer.from(build(3)).equals(Buffer.from(build(3)))).toBe(true);
    expect(Buffer.from(build(3)).equals(Buffer.from(build(4)))).toBe(false);
  });

  test("weights and biases start within PyTorch's default bound, 1/sqrt(fanIn)", () => {
    const cnn = buildZooModel('cnn', { inputShape: [1, 28, 28], numClasses: 10, seed: 2 });
    const fanIns: Record<string, number> = { conv1: 25, conv2: 150, fc1: 256, fc2: 120, fc3: 84 };
    for (const p of cnn.params) {
      const bound = 1 / Math.sqrt(fanIns[p.name.split('.')[0]]);
      const largest = p.data.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
      expect([p.name, largest <= bound]).toEqual([p.name, true]);
      // Every tensor but the smallest biases comes close to its bound: the draw spans it.
      if (p.data.length >= 84) expect([p.name, largest > bound * 0.9]).toEqual([p.name, true]);
    }
  });

  test('sizes a user must fix are reported with the value seen', () => {
    expect(() => buildZooModel('cnn', { inputShape: [1, 8, 8], numClasses: 10, seed: 1 })).toThrow(
      "inputShape: [1, 8, 8] is too small for the cnn's 5x5 convolutions",
    );
    expect(() => buildZooModel('mlp', { inputShape: [4], numClasses: 1, seed: 1 })).toThrow(
      'numClasses: must be an integer >= 2, got 1',
    );
  });
});
