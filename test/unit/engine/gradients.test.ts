/** @jest-environment ./test/unit/engine/ort-environment.js */
import { Attributes, DataType, GraphBuilder } from '../../../federation/engine/graph-builder';
import { appendLoss } from '../../../federation/engine/losses';
import { expectGradientsMatch } from './gradient-check';

const F32 = DataType.FLOAT;

describe('gradient rules agree with central finite differences', () => {
  test('Gemm with transposes, alpha, beta and a broadcast bias', async () => {
    for (const [transA, transB] of [
      [0, 0],
      [0, 1],
      [1, 0],
      [1, 1],
    ]) {
      await expectGradientsMatch({
        inputs: [
          { name: 'a', dims: transA ? [4, 3] : [3, 4] },
          { name: 'w', dims: transB ? [5, 4] : [4, 5] },
          { name: 'c', dims: [5] },
        ],
        build: (b) =>
          b.op('Gemm', ['a', 'w', 'c'], { transA, transB, alpha: 0.7, beta: 1.3 }, [
            'alpha',
            'beta',
          ]),
      });
    }
  });

  test('Gemm bias broadcast along rows ([M, 1]) and without bias', async () => {
    await expectGradientsMatch({
      inputs: [
        { name: 'a', dims: [3, 4] },
        { name: 'w', dims: [4, 2] },
        { name: 'c', dims: [3, 1] },
      ],
      build: (b) => b.op('Gemm', ['a', 'w', 'c']),
    });
    await expectGradientsMatch({
      inputs: [
        { name: 'a', dims: [3, 4] },
        { name: 'w', dims: [2, 4] },
      ],
      build: (b) => b.op('Gemm', ['a', 'w'], { transB: 1 }),
    });
  });

  test('MatMul: plain, batched, and with broadcast batch dims', async () => {
    for (const [a, w] of [
      [
        [3, 4],
        [4, 5],
      ],
      [
        [2, 3, 4],
        [4, 5],
      ],
      [
        [3, 4],
        [2, 4, 5],
      ],
      [
        [2, 1, 3, 4],
        [3, 4, 2],
      ],
    ]) {
      await expectGradientsMatch({
        inputs: [
          { name: 'a', dims: a },
          { name: 'w', dims: w },
        ],
        build: (b) => b.op('MatMul', ['a', 'w']),
      });
    }
  });

  test('Add, Sub, Mul and Div with numpy broadcasting reduce gradients to each operand shape', async () => {
    const shapes = [
      [
        [2, 3],
        [2, 3],
      ],
      [[2, 3], [3]],
      [
        [2, 1, 4],
        [3, 1],
      ],
      [
        [2, 3],
        [2, 1],
      ],
      [[1], [2, 3]],
      [[4], []],
    ];
    for (const op of ['Add', 'Sub', 'Mul', 'Div']) {
      for (const [a, w] of shapes) {
        await expectGradientsMatch({
          inputs: [
            { name: 'a', dims: a },
            // Divisors kept away from zero, where the quotient is not smooth.
            op === 'Div' ? { name: 'w', dims: w, low: 0.5, high: 1.5 } : { name: 'w', dims: w },
          ],
          build: (b) => b.op(op, ['a', 'w']),
        });
      }
    }
  });

  test('the same value used twice sums both gradient contributions', async () => {
    await expectGradientsMatch({
      inputs: [{ name: 'x', dims: [2, 3] }],
      build: (b) => b.op('Mul', [b.op('Tanh', ['x']), 'x']),
    });
  });

  test('Relu, Sigmoid, Tanh, Neg, Exp, Log, Sqrt, Identity and Dropout (inference)', async () => {
    for (const op of ['Relu', 'Sigmoid', 'Tanh', 'Neg', 'Exp', 'Identity', 'Dropout']) {
      await expectGradientsMatch({
        // Relu's kink at 0 is avoided by values bounded away from it.
        inputs: [
          {
            name: 'x',
            dims: [3, 4],
            values: [-1.2, -0.9, -0.5, -0.3, 0.2, 0.4, 0.7, 1.1, -0.15, 0.35, 1.4, -2],
          },
        ],
        build: (b) => b.op(op, ['x']),
      });
    }
    for (const op of ['Log', 'Sqrt']) {
      await expectGradientsMatch({
        inputs: [{ name: 'x', dims: [3, 4], low: 0.5, high: 2 }],
        build: (b) => b.op(op, ['x']),
      });
    }
  });

  test('Softmax and LogSoftmax along the last and the first axis', async () => {
    for (const op of ['Softmax', 'LogSoftmax']) {
      for (const axis of [-1, 0]) {
        await expectGradientsMatch({
          inputs: [{ name: 'x', dims: [3, 5] }],
          build: (b) => b.op(op, ['x'], { axis }),
        });
      }
    }
  });

  test('Conv 2-D with bias, strides and pads (input, weight and bias gradients)', async () => {
    const cases: { x: number[]; w: number[]; attrs: Attributes }[] = [
      { x: [2, 3, 6, 6], w: [4, 3, 3, 3], attrs: {} },
      { x: [2, 2, 7, 7], w: [3, 2, 3, 3], attrs: { strides: [2, 2], pads: [1, 1, 1, 1] } },
      // 6 - 3 is not a multiple of 2: the last input row is never read by the forward pass.
      { x: [1, 2, 6, 5], w: [2, 2, 3, 2], attrs: { strides: [2, 2], pads: [0, 1, 0, 0] } },
      { x: [2, 1, 5, 5], w: [2, 1, 5, 5], attrs: { pads: [2, 2, 2, 2] } },
      { x: [1, 2, 7, 7], w: [2, 2, 3, 3], attrs: { dilations: [2, 2], strides: [2, 1] } },
    ];
    for (const { x, w, attrs } of cases) {
      await expectGradientsMatch({
        floatType: F32,
        inputs: [
          { name: 'x', dims: x },
          { name: 'w', dims: w },
          { name: 'bias', dims: [w[0]] },
        ],
        build: (b) => b.op('Conv', ['x', 'w', 'bias'], attrs),
      });
    }
  });

  test('MaxPool: non-overlapping, and overlapping with pads', async () => {
    // Distinct values, so that no window has a tie the finite difference could flip.
    const distinct = (n: number) => Array.from({ length: n }, (_, i) => ((i * 37) % n) / n - 0.5);
    const cases: { x: number[]; attrs: Attributes }[] = [
      { x: [2, 2, 4, 4], attrs: { kernel_shape: [2, 2], strides: [2, 2] } },
      { x: [1, 2, 5, 5], attrs: { kernel_shape: [3, 3], strides: [1, 1], pads: [1, 1, 1, 1] } },
      { x: [1, 1, 5, 4], attrs: { kernel_shape: [2, 2], strides: [2, 2] } },
    ];
    for (const { x, attrs } of cases) {
      const count = x.reduce((p, d) => p * d, 1);
      await expectGradientsMatch({
        inputs: [{ name: 'x', dims: x, values: distinct(count) }],
        eps: 1e-4,
        build: (b) => b.op('MaxPool', ['x'], attrs),
      });
    }
  });

  test('AveragePool: plain, and padded with and without counting the pads', async () => {
    const cases: { x: number[]; attrs: Attributes }[] = [
      { x: [2, 2, 4, 4], attrs: { kernel_shape: [2, 2], strides: [2, 2] } },
      { x: [1, 2, 5, 5], attrs: { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] } },
      {
        x: [1, 2, 5, 5],
        attrs: { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1], count_include_pad: 1 },
      },
      { x: [1, 1, 6, 5], attrs: { kernel_shape: [2, 3], strides: [2, 1] } },
    ];
    for (const { x, attrs } of cases) {
      await expectGradientsMatch({
        floatType: F32,
        inputs: [{ name: 'x', dims: x }],
        build: (b) => b.op('AveragePool', ['x'], attrs),
      });
    }
  });

  test('Flatten, Reshape (0 and -1), Transpose, Unsqueeze, Squeeze and Concat move gradients back', async () => {
    await expectGradientsMatch({
      inputs: [{ name: 'x', dims: [2, 3, 4] }],
      build: (b) => b.op('Flatten', ['x'], { axis: 2 }),
    });
    await expectGradientsMatch({
      inputs: [{ name: 'x', dims: [2, 3, 4] }],
      build: (b) => b.op('Reshape', ['x', b.int64s([0, -1, 2])]),
    });
    await expectGradientsMatch({
      inputs: [{ name: 'x', dims: [2, 3, 4] }],
      build: (b) => b.op('Transpose', ['x'], { perm: [2, 0, 1] }),
    });
    await expectGradientsMatch({
      inputs: [{ name: 'x', dims: [2, 3] }],
      build: (b) => b.op('Squeeze', [b.op('Unsqueeze', ['x', b.int64s([0, 2])]), b.int64s([0])]),
    });
    await expectGradientsMatch({
      inputs: [
        { name: 'a', dims: [2, 1, 3] },
        { name: 'c', dims: [2, 4, 3] },
        { name: 'd', dims: [2, 2, 3] },
      ],
      build: (b) => b.op('Concat', ['a', 'c', 'd'], { axis: 1 }),
    });
  });

  test('Gather (embedding lookup) adds the gradients of repeated rows', async () => {
    await expectGradientsMatch({
      inputs: [
        { name: 'table', dims: [5, 3] },
        { name: 'ids', dims: [2, 3], values: [4, 0, 4, 1, 4, 2], int64: true },
      ],
      build: (b) => b.op('Gather', ['table', 'ids'], { axis: 0 }),
    });
  });

  test('ReduceSum and ReduceMean over chosen axes, all axes, with and without keepdims', async () => {
    for (const op of ['ReduceSum', 'ReduceMean']) {
      for (const keepdims of [0, 1]) {
        await expectGradientsMatch({
          inputs: [{ name: 'x', dims: [2, 3, 4] }],
          // ReduceSum takes axes as an input at opset 17, ReduceMean as an attribute.
          build: (b) =>
            op === 'ReduceSum'
              ? b.op(op, ['x', b.int64s([0, 2])], { keepdims })
              : b.op(op, ['x'], { axes: [0, 2], keepdims }),
        });
        await expectGradientsMatch({
          inputs: [{ name: 'x', dims: [2, 3] }],
          build: (b) => b.op(op, ['x'], { keepdims }),
        });
      }
    }
  });

  test('softmax cross-entropy and mean squared error losses, with a padding row masked out', async () => {
    for (const kind of ['cross-entropy', 'mse'] as const) {
      await expectGradientsMatch({
        inputs: [{ name: 'logits', dims: [3, 4] }],
        wrt: ['logits'],
        build: (b: GraphBuilder) => {
          const labels = b.initializer('labels', [3, 4], [0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
          const mask = b.initializer('mask', [3, 1], [1, 1, 0]);
          appendLoss(b, kind, 'logits', labels, mask, 4, 'loss_value');
          return 'loss_value';
        },
      });
    }
  });
});
