import * as fs from 'fs';
import * as net from 'net';
import { Aggregator } from '../federation/aggregator/aggregator';
import { ControlClient, FederationClient } from '../federation/protocol/clients';
import { createJobCertificates, PemPair, TlsFiles } from '../federation/protocol/identity';
import { createLogger } from '../federation/log';
import { RoundResult } from '../federation/protocol/wire';

/**
 * Update transport throughput: one update pushed through the Federation.PushUpdate stream
 * (1 MiB chunks, validated, staged and folded by a real aggregator) with mutual TLS and over
 * plain TCP, next to a raw loopback TCP copy of the same bytes in the same run as the
 * baseline. Sender and receiver share this process, as they share the machine in a
 * simulation. Prints figures; asserts nothing.
 *
 * Environment: BENCH_MODEL_MB (default 64), BENCH_REPEAT (default 3).
 */

const modelMb = Number(process.env.BENCH_MODEL_MB ?? 64);
const repeat = Number(process.env.BENCH_REPEAT ?? 3);
const size = Math.floor((modelMb * 1024 * 1024) / 4);
const bytes = size * 4;
const JOB = 'bench';
const CHUNK = Number(process.env.BENCH_CHUNK_BYTES ?? 1 << 20);
const quiet = createLogger('aggregator', fs.createWriteStream('/dev/null'));

function rate(seconds: number): string {
  return `${(seconds * 1000).toFixed(0)} ms  ${(bytes / seconds / 1e6).toFixed(0)} MB/s`;
}

async function rawTcp(payload: Buffer): Promise<number> {
  const server = net.createServer((socket) => {
    let received = 0;
    socket.on('data', (d) => {
      received += d.length;
      if (received >= payload.length) socket.end('k');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  const start = process.hrtime.bigint();
  await new Promise<void>((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => {
      // Written in the same 1 MiB pieces the gRPC stream uses.
      let at = 0;
      const pump = (): void => {
        while (at < payload.length) {
          const piece = payload.subarray(at, at + (1 << 20));
          at += piece.length;
          if (!socket.write(piece)) return void socket.once('drain', pump);
        }
      };
      pump();
    });
    socket.on('data', () => resolve());
    socket.on('error', reject);
  });
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  server.close();
  return seconds;
}

async function grpcPush(
  tls: boolean,
  files: { agg: TlsFiles; coord: TlsFiles; site: TlsFiles; other: TlsFiles },
): Promise<number> {
  const model = [{ name: 'w', dims: [size], data: new Float32Array(size) }];
  const delta = [{ name: 'w', dims: [size], data: new Float32Array(size).fill(1e-3) }];
  const aggregator = new Aggregator({
    job: JOB,
    initialModel: model,
    strategy: 'fedavg',
    tls: tls ? files.agg : undefined,
    insecureDev: !tls,
    logger: quiet,
  });
  const address = `127.0.0.1:${await aggregator.listen('127.0.0.1:0')}`;
  const control = new ControlClient(
    tls ? { address, tls: files.coord, serverName: 'localhost' } : { address },
  );
  const site = new FederationClient(
    tls ? { address, tls: files.site, serverName: 'localhost' } : { address, insecureDevSite: 'a' },
  );
  const other = new FederationClient(
    tls
      ? { address, tls: files.other, serverName: 'localhost' }
      : { address, insecureDevSite: 'b' },
  );
  let fastest = Infinity;
  for (let round = 1; round <= repeat + 1; round++) {
    await control.startRound({
      job: JOB,
      round,
      participants: ['a', 'b'],
      deadlineUnixMs: Date.now() + 600_000,
      minSites: 1,
    });
    const closed = new Promise<RoundResult>((resolve) => {
      const w = control.watchRounds(round);
      w.on('data', (r: RoundResult) => {
        w.cancel();
        resolve(r);
      });
      w.on('error', () => undefined);
    });
    const start = process.hrtime.bigint();
    await site.pushUpdate(
      { job: JOB, round, examples: 1, encoding: 'f32', metrics: {} },
      delta,
      CHUNK,
    );
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    if (round > 1) fastest = Math.min(fastest, seconds);
    // The second site's update closes the round outside the timed push.
    await other.pushUpdate(
      { job: JOB, round, examples: 1, encoding: 'f32', metrics: {} },
      delta,
      CHUNK,
    );
    await closed;
  }
  site.close();
  other.close();
  control.close();
  aggregator.close();
  return fastest;
}

async function main(): Promise<void> {
  const certs = await createJobCertificates(JOB, ['a', 'b']);
  const files = (p: PemPair): TlsFiles => ({
    ca: Buffer.from(certs.ca.cert),
    cert: Buffer.from(p.cert),
    key: Buffer.from(p.key),
  });
  const all = {
    agg: files(certs.aggregator),
    coord: files(certs.coordinator),
    site: files(certs.sites.a),
    other: files(certs.sites.b),
  };
  const payload = Buffer.alloc(bytes, 7);
  let raw = Infinity;
  for (let i = 0; i < repeat; i++) raw = Math.min(raw, await rawTcp(payload));
  const plain = await grpcPush(false, all);
  const mtls = await grpcPush(true, all);
  console.log(`Update transport, ${modelMb} MB update, best of ${repeat}, one process, loopback`);
  console.log(`  baseline raw TCP copy:             ${rate(raw)}`);
  console.log(
    `  gRPC PushUpdate, plain TCP (dev):  ${rate(plain)}  (${(plain / raw).toFixed(2)}x the raw copy's time)`,
  );
  console.log(
    `  gRPC PushUpdate, mutual TLS:       ${rate(mtls)}  (${(mtls / raw).toFixed(2)}x the raw copy's time)`,
  );
}

void main();
