import { summarize, SimulationResult } from '../../../operator/cli/simulate';
import { RoundResult } from '../../../federation/protocol/wire';

function round(n: number, outcome: 'closed' | 'failed', accuracy?: number): RoundResult {
  return {
    round: n,
    outcome,
    participants: ['a', 'b'],
    accepted: outcome === 'closed' ? ['a', 'b'] : [],
    rejected: [],
    siteMetrics: {},
    evalMetrics: accuracy === undefined ? {} : { accuracy, loss: 1 - accuracy },
    examples: 100,
    durationMs: 1000,
    bytesReceived: 0,
    bytesSent: 0,
    reason: outcome === 'failed' ? 'quorum missed' : '',
    siteExamples: {},
  };
}

function result(results: RoundResult[], outcome: 'succeeded' | 'failed' = 'succeeded') {
  const done: SimulationResult = {
    outcome,
    reason: outcome === 'succeeded' ? 'all 3 rounds completed' : 'retries spent',
    completedRound: results.filter((r) => r.outcome === 'closed').length,
    results,
    modelPath: outcome === 'succeeded' ? '/out/model.onnx' : '',
    metricsFile: '/out/metrics.json',
    plotFile: '/out/plot.svg',
    aggregatorRestarts: 0,
    exitCodes: {},
  };
  return done;
}

describe('the summary flotilla simulate prints', () => {
  test('gives the last accuracy, the best round when it peaked earlier, and the wall time', () => {
    const text = summarize(
      result([round(1, 'closed', 0.7), round(2, 'closed', 0.88234), round(3, 'closed', 0.8766)]),
      4361_600,
    );
    expect(text).toBe(
      'succeeded: all 3 rounds completed\n' +
        '  rounds completed: 3 in 4362 s, accuracy 0.8766 (best 0.8823 at round 2)\n' +
        '  metrics: /out/metrics.json\n  plot:    /out/plot.svg\n  model:   /out/model.onnx\n',
    );
  });

  test('a failed round neither counts as the last accuracy nor as the best', () => {
    const text = summarize(
      result([round(1, 'closed', 0.5), round(2, 'failed', 0.99)], 'failed'),
      2000,
    );
    expect(text).toContain('rounds completed: 1 in 2 s, accuracy 0.5000 (best 0.5000 at round 1)');
    expect(text).not.toContain('model:');
  });

  test('a job that closed no round prints no accuracy', () => {
    const text = summarize(result([round(1, 'failed')], 'failed'), 500);
    expect(text).toContain('rounds completed: 0 in 1 s\n');
    expect(text).not.toContain('accuracy');
  });
});
