import { spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { ControlClient, FederationClient } from '../federation/protocol/clients';
import { RoundResult } from '../federation/protocol/wire';

/**
 * Aggregator peak memory with 2, 10 and 50 concurrent updates of a 100 MB model: a real
 * aggregator process (bench/aggregator-memory-server.ts) receives every participant's update
 * at once, pushed from this process over loopback gRPC. Its peak resident memory (VmHWM) is
 * printed next to two baselines from the same run: the same process idle with its model
 * loaded, and what keeping every update (sites x model) would take. Asserts nothing.
 *
 * Environment: BENCH_MODEL_MB (default 100), BENCH_CONCURRENCY (default 2,10,50),
 * BENCH_STAGING_SLOTS (default 2).
 */

const modelMb = Number(process.env.BENCH_MODEL_MB ?? 100);
const levels = (process.env.BENCH_CONCURRENCY ?? '2,10,50').split(',').map(Number);
const slots = Number(process.env.BENCH_STAGING_SLOTS ?? 2);
const size = Math.floor((modelMb * 1024 * 1024) / 4);
const MB = 1024 * 1024;

function memoryOf(pid: number): { rss: number; peak: number } {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (key: string): number =>
    Number(new RegExp(`${key}:\\s+(\\d+) kB`).exec(status)![1]) * 1024;
  return { rss: kb('VmRSS'), peak: kb('VmHWM') };
}

async function measure(
  sites: number,
  delta: Float32Array,
): Promise<{ idle: number; peak: number; seconds: number }> {
  const server = spawn(
    process.execPath,
    [
      '--max-old-space-size=4096',
      path.join(__dirname, 'aggregator-memory-server.js'),
      String(modelMb),
      String(slots),
    ],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  const port = await new Promise<number>((resolve) =>
    server.stdout!.once('data', (d) => resolve(Number(String(d).trim()))),
  );
  const address = `127.0.0.1:${port}`;
  await new Promise((resolve) => setTimeout(resolve, 500));
  const idle = memoryOf(server.pid!).rss;

  const control = new ControlClient({ address });
  const names = Array.from({ length: sites }, (_, i) => `site-${i}`);
  await control.startRound({
    job: 'bench',
    round: 1,
    participants: names,
    deadlineUnixMs: Date.now() + 3_600_000,
    minSites: sites,
  });
  const closed = new Promise<RoundResult>((resolve, reject) => {
    const w = control.watchRounds(1);
    w.on('data', (r: RoundResult) => {
      w.cancel();
      resolve(r);
    });
    w.on('error', (e: Error & { code?: number }) => (e.code === 1 ? undefined : reject(e)));
  });
  const clients = names.map((name) => new FederationClient({ address, insecureDevSite: name }));
  const start = Date.now();
  await Promise.all(
    clients.map((c) =>
      c.pushUpdate({ job: 'bench', round: 1, examples: 10, encoding: 'f32', metrics: {} }, [
        { name: 'w', dims: [size], data: delta },
      ]),
    ),
  );
  const result = await closed;
  const seconds = (Date.now() - start) / 1000;
  if (result.accepted.length !== sites)
    throw new Error(`round closed with ${result.accepted.length} of ${sites} updates`);
  const { peak } = memoryOf(server.pid!);
  for (const c of clients) c.close();
  control.close();
  server.kill('SIGKILL');
  return { idle, peak, seconds };
}

async function main(): Promise<void> {
  const delta = new Float32Array(size).fill(1e-3);
  console.log(
    `Aggregator peak memory, ${modelMb} MB model, ${slots} staging slots, updates pushed at once over loopback`,
  );
  console.log(
    '  updates  idle RSS   peak RSS   peak-idle  (in models)   all updates kept (baseline)  time',
  );
  for (const sites of levels) {
    const m = await measure(sites, delta);
    const extra = m.peak - m.idle;
    console.log(
      `  ${String(sites).padStart(7)}  ${(m.idle / MB).toFixed(0).padStart(6)} MB  ${(m.peak / MB).toFixed(0).padStart(6)} MB  ` +
        `${(extra / MB).toFixed(0).padStart(6)} MB  (${(extra / (size * 4)).toFixed(1).padStart(4)})       ` +
        `${((sites * size * 4) / MB).toFixed(0).padStart(6)} MB                 ${m.seconds.toFixed(1)} s`,
    );
  }
}

void main();
