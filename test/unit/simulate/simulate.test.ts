/** @jest-environment ./test/unit/engine/ort-environment.js */
// onnxruntime checks Float32Array against its own realm; that environment shares Node's.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as ort from 'onnxruntime-node';
import { runSimulation, SimulationOptions } from '../../../operator/cli/simulate';
import { createLogger } from '../../../federation/log';

// These tests run the compiled CLI as child processes (`make test` builds first).
const ENTRY = path.resolve(__dirname, '..', '..', '..', 'bin', 'flotilla.js');
const COMPILED = path.resolve(__dirname, '..', '..', '..', 'dist', 'operator', 'cli', 'main.js');
const FASHION_MNIST = process.env.FASHION_MNIST ?? '/usr/share/datasets/fashion-mnist';

jest.setTimeout(180_000);

function manifest(
  name: string,
  overrides: { rounds: number; minSites: number; timeout: number },
): string {
  return `
apiVersion: flotilla.dev/v1alpha1
kind: FederatedJob
metadata:
  name: ${name}
spec:
  model: { zoo: logreg, inputShape: [1, 28, 28], numClasses: 10, seed: 3 }
  sites:
    - name: site-a
    - name: site-b
    - name: site-c
  rounds: ${overrides.rounds}
  minSites: ${overrides.minSites}
  sitesPerRound: 3
  roundTimeoutSeconds: ${overrides.timeout}
  training: { localEpochs: 1, batchSize: 32, optimizer: sgd, learningRate: 0.05 }
  aggregation: { strategy: fedavg }
  failurePolicy: { maxRoundRetries: 1 }
  partition:
    dataset: ${FASHION_MNIST}
    scheme: iid
    seed: 5
    maxExamples: 1500
    maxTestExamples: 500
`;
}

function setup(name: string, overrides: { rounds: number; minSites: number; timeout: number }) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `flotilla-sim-${name}-`));
  const file = path.join(dir, 'job.yaml');
  fs.writeFileSync(file, manifest(name, overrides));
  const options: SimulationOptions = {
    out: path.join(dir, 'out'),
    entry: ENTRY,
    progress: false,
    log: createLogger('simulate', fs.createWriteStream('/dev/null')),
  };
  return { dir, file, options };
}

const describeIfBuilt = fs.existsSync(COMPILED) ? describe : describe.skip;

describeIfBuilt('flotilla simulate', () => {
  test('a short simulation learns: held-out accuracy rises well above chance', async () => {
    const { file, options } = setup('learns', { rounds: 3, minSites: 3, timeout: 120 });
    const result = await runSimulation(file, options);

    expect(result.outcome).toBe('succeeded');
    // Every process saw the job finish and exited successfully by itself.
    expect(result.exitCodes).toEqual({
      aggregator: 0,
      'trainer-site-a': 0,
      'trainer-site-b': 0,
      'trainer-site-c': 0,
    });
    const metrics = JSON.parse(fs.readFileSync(result.metricsFile, 'utf8'));
    expect(metrics.rounds.map((r: { round: number }) => r.round)).toEqual([1, 2, 3]);
    const last = metrics.rounds[2];
    // Ten classes: chance is 0.1.
    expect(last.accuracy).toBeGreaterThan(0.55);
    expect(last.accepted).toEqual(['site-a', 'site-b', 'site-c']);
    expect(last.bytesReceived).toBe(3 * 7850 * 4);
    expect(fs.readFileSync(result.plotFile, 'utf8')).toContain('class="mark-line role-mark');

    // The final model is a plain ONNX inference model that onnxruntime runs.
    const session = await ort.InferenceSession.create(result.modelPath);
    const input = new ort.Tensor('float32', new Float32Array(2 * 784), [2, 1, 28, 28]);
    const out = await session.run({ [session.inputNames[0]]: input });
    expect(out[session.outputNames[0]].dims).toEqual([2, 10]);
    await session.release();
  });

  test('a trainer killed mid-round leaves a round that still closes on quorum', async () => {
    const { file, options } = setup('killed-trainer', { rounds: 2, minSites: 2, timeout: 10 });
    const result = await runSimulation(file, {
      ...options,
      restartTrainers: false,
      onRoundStarted: (round, _participants, processes) => {
        if (round === 2) processes.trainer('site-c')?.kill('SIGKILL');
      },
    });

    expect(result.outcome).toBe('succeeded');
    const round2 = result.results.find((r) => r.round === 2)!;
    expect(round2.outcome).toBe('closed');
    expect(round2.participants).toEqual(['site-a', 'site-b', 'site-c']);
    expect(round2.accepted).toEqual(['site-a', 'site-b']);
  });

  test('an aggregator killed mid-job resumes from its checkpoint and the job finishes', async () => {
    const { file, options } = setup('killed-aggregator', { rounds: 3, minSites: 3, timeout: 60 });
    let killed = false;
    const result = await runSimulation(file, {
      ...options,
      onRoundStarted: (round, _participants, processes) => {
        // Killed as round 2 starts: after round 1's checkpoint, before round 2 can close.
        if (round === 2 && !killed) {
          killed = true;
          processes.aggregator()?.kill('SIGKILL');
        }
      },
    });

    expect(result.outcome).toBe('succeeded');
    expect(result.aggregatorRestarts).toBe(1);
    expect(result.completedRound).toBe(3);
    const closed = result.results.filter((r) => r.outcome === 'closed').map((r) => r.round);
    expect(closed).toEqual([1, 2, 3]);
    const log = fs.readFileSync(path.join(options.out, 'logs', 'aggregator.log'), 'utf8');
    const resumed = log
      .split('\n')
      .filter((l) => l.includes('"resumed from checkpoint"'))
      .map((l) => JSON.parse(l).round);
    expect(resumed).toEqual([1]);
  });
});
