import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { runSimulation } from '../operator/cli/simulate';
import { createLogger } from '../federation/log';

/**
 * Per-round orchestration overhead: a real `flotilla simulate` run (aggregator and trainer
 * processes, mutual TLS over loopback) and, per round, the round's time minus the slowest
 * participant's local compute time (training and local evaluation, from the trainers' logs),
 * which is the baseline. The overhead covers starting the round, model download, update push,
 * validation, folding, the strategy step, held-out evaluation and the checkpoint. Asserts
 * nothing.
 *
 * Environment: BENCH_MODEL (default mlp), BENCH_SITES (default 3), BENCH_ROUNDS (default 5),
 * BENCH_EXAMPLES (default 6000), FASHION_MNIST (dataset directory).
 */

const model = process.env.BENCH_MODEL ?? 'mlp';
const sites = Number(process.env.BENCH_SITES ?? 3);
const rounds = Number(process.env.BENCH_ROUNDS ?? 5);
const examples = Number(process.env.BENCH_EXAMPLES ?? 6000);
const dataset = process.env.FASHION_MNIST ?? '/usr/share/datasets/fashion-mnist';

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'flotilla-bench-orchestration-'));
  const manifest = path.join(dir, 'job.yaml');
  fs.writeFileSync(
    manifest,
    `apiVersion: flotilla.dev/v1alpha1
kind: FederatedJob
metadata: { name: bench-orchestration }
spec:
  model: { zoo: ${model}, inputShape: [1, 28, 28], numClasses: 10, seed: 1 }
  sites:
${Array.from({ length: sites }, (_, i) => `    - name: site-${i}`).join('\n')}
  rounds: ${rounds}
  minSites: ${sites}
  sitesPerRound: ${sites}
  roundTimeoutSeconds: 600
  training: { localEpochs: 1, batchSize: 32, optimizer: sgd, learningRate: 0.05 }
  partition: { dataset: ${dataset}, scheme: iid, seed: 1, maxExamples: ${examples}, maxTestExamples: 1000 }
`,
  );
  const out = path.join(dir, 'out');
  const result = await runSimulation(manifest, {
    out,
    progress: false,
    log: createLogger('simulate', fs.createWriteStream('/dev/null')),
  });

  // The slowest participant's compute per round, from the trainers' "update pushed" lines.
  const slowest = new Map<number, number>();
  for (const file of fs
    .readdirSync(path.join(out, 'logs'))
    .filter((f) => f.startsWith('trainer-'))) {
    for (const line of fs.readFileSync(path.join(out, 'logs', file), 'utf8').split('\n')) {
      if (!line.includes('"update pushed"')) continue;
      const entry = JSON.parse(line) as { round: number; computeMs: number };
      slowest.set(entry.round, Math.max(slowest.get(entry.round) ?? 0, entry.computeMs));
    }
  }
  console.log(
    `Orchestration overhead per round: ${model}, ${sites} sites, ${examples} examples, ${rounds} rounds, simulate (processes, mTLS, loopback)`,
  );
  console.log('  round  round time  slowest compute (baseline)  overhead');
  const overheads: number[] = [];
  for (const r of result.results.filter((x) => x.outcome === 'closed')) {
    const compute = slowest.get(r.round) ?? NaN;
    const overhead = r.durationMs - compute;
    overheads.push(overhead);
    console.log(
      `  ${String(r.round).padStart(5)}  ${r.durationMs.toFixed(0).padStart(7)} ms  ${compute.toFixed(0).padStart(12)} ms              ${overhead.toFixed(0).padStart(5)} ms`,
    );
  }
  const sorted = [...overheads].sort((a, b) => a - b);
  console.log(
    `  median overhead ${sorted[Math.floor(sorted.length / 2)].toFixed(0)} ms (round 1 includes the trainers' first session warm-up)`,
  );
  fs.rmSync(dir, { recursive: true, force: true });
}

void main();
