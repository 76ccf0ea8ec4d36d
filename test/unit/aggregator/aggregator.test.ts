import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as grpc from '@grpc/grpc-js';
import { Aggregator } from '../../../federation/aggregator/aggregator';
import { NamedTensor } from '../../../federation/engine/tensor';
import { ControlClient, FederationClient, updateParts } from '../../../federation/protocol/clients';
import { tensorChunks } from '../../../federation/protocol/chunks';
import {
  clientCredentials,
  createJobCertificates,
  JobCertificates,
  PemPair,
  TlsFiles,
} from '../../../federation/protocol/identity';
import {
  CHANNEL_OPTIONS,
  loadProtocol,
  RoundResult,
  UpdateHeader,
  UpdatePart,
} from '../../../federation/protocol/wire';
import { createLogger } from '../../../federation/log';

const JOB = 'agg-test';
const SITES = ['alpha', 'beta', 'gamma'];
const quiet = createLogger('aggregator', fs.createWriteStream('/dev/null'));

let certs: JobCertificates;
let otherCerts: JobCertificates;

beforeAll(async () => {
  certs = await createJobCertificates(JOB, SITES);
  otherCerts = await createJobCertificates(JOB, SITES);
});

function tls(pair: PemPair, ca = certs.ca.cert): TlsFiles {
  return { ca: Buffer.from(ca), cert: Buffer.from(pair.cert), key: Buffer.from(pair.key) };
}

function model(): NamedTensor[] {
  return [
    { name: 'w', dims: [2, 3], data: Float32Array.from([1, 2, 3, 4, 5, 6]) },
    { name: 'b', dims: [3], data: Float32Array.from([0.5, -0.5, 0]) },
  ];
}

function delta(scale: number): NamedTensor[] {
  return model().map((t) => ({ ...t, data: t.data.map((_, i) => scale * (i + 1)) }));
}

interface Harness {
  aggregator: Aggregator;
  address: string;
  control: ControlClient;
  site(name: string): FederationClient;
  close(): void;
}

async function start(
  options: {
    checkpointDir?: string;
    strategy?: 'fedavg' | 'fedadam';
    stagingSlots?: number;
    updateIdleTimeoutMs?: number;
    maxUpdateNorm?: number;
  } = {},
): Promise<Harness> {
  const aggregator = new Aggregator({
    job: JOB,
    initialModel: model(),
    strategy: options.strategy ?? 'fedavg',
    tls: tls(certs.aggregator),
    checkpointDir: options.checkpointDir,
    chunkBytes: 8,
    stagingSlots: options.stagingSlots,
    updateIdleTimeoutMs: options.updateIdleTimeoutMs,
    maxUpdateNorm: options.maxUpdateNorm,
    logger: quiet,
  });
  const port = await aggregator.listen('127.0.0.1:0');
  const address = `127.0.0.1:${port}`;
  const control = new ControlClient({ address, tls: tls(certs.coordinator) });
  const clients: FederationClient[] = [];
  return {
    aggregator,
    address,
    control,
    site(name) {
      const c = new FederationClient({ address, tls: tls(certs.sites[name]) });
      clients.push(c);
      return c;
    },
    close() {
      for (const c of clients) c.close();
      control.close();
      aggregator.close();
    },
  };
}

function header(round: number, examples: number, extra: Partial<UpdateHeader> = {}): UpdateHeader {
  return { job: JOB, round, examples, encoding: 'f32', metrics: { train_loss: 1 }, ...extra };
}

function nextResult(control: ControlClient, fromRound: number): Promise<RoundResult> {
  return new Promise((resolve, reject) => {
    const stream = control.watchRounds(fromRound);
    stream.on('data', (r: RoundResult) => {
      stream.cancel();
      resolve(r);
    });
    stream.on('error', (err: grpc.ServiceError) => {
      if (err.code !== grpc.status.CANCELLED) reject(err);
    });
  });
}

async function startRound(
  h: Harness,
  round: number,
  participants: string[],
  minSites: number,
  deadlineMs = 20_000,
) {
  await h.control.startRound({
    job: JOB,
    round,
    participants,
    deadlineUnixMs: Date.now() + deadlineMs,
    minSites,
  });
}

function expectRejected(
  promise: Promise<unknown>,
  code: grpc.status,
  message: RegExp,
): Promise<void> {
  return expect(promise).rejects.toMatchObject({ code, details: expect.stringMatching(message) });
}

describe('aggregator', () => {
  let h: Harness;
  afterEach(() => h?.close());

  test('FedAvg moves the global model by the example-weighted mean of the deltas', async () => {
    h = await start();
    await startRound(h, 1, ['alpha', 'beta'], 2);
    const result = nextResult(h.control, 1);
    await h.site('alpha').pushUpdate(header(1, 100), delta(1), 8);
    await h.site('beta').pushUpdate(header(1, 300), delta(-1), 8);
    const r = await result;

    expect(r).toMatchObject({
      round: 1,
      outcome: 'closed',
      accepted: ['alpha', 'beta'],
      examples: 400,
      siteExamples: { alpha: 100, beta: 300 },
    });
    const expected = model().map((t, ti) =>
      Array.from(t.data, (v, i) =>
        Math.fround(v + (100 * delta(1)[ti].data[i] + 300 * delta(-1)[ti].data[i]) / 400),
      ),
    );
    expect(h.aggregator.globalModel().map((t) => Array.from(t.data))).toEqual(expected);
  });

  test('a trainer downloads the global model of the open round in chunks', async () => {
    h = await start();
    await startRound(h, 1, ['alpha'], 1);
    const { tensors, bytes } = await h.site('alpha').downloadModel(JOB, 1);
    expect(tensors).toEqual(model());
    expect(bytes).toBe(9 * 4);
    await expect(h.site('gamma').downloadModel(JOB, 1)).rejects.toMatchObject({
      code: grpc.status.FAILED_PRECONDITION,
      details: 'site "gamma" is not a participant of round 1',
    });
    await expect(h.site('alpha').downloadModel(JOB, 2)).rejects.toMatchObject({
      code: grpc.status.FAILED_PRECONDITION,
      details: 'round: got 2, the open round is 1',
    });
  });

  describe('rejects a bad update and leaves the aggregate bit-for-bit unchanged', () => {
    const good = (): UpdatePart[] => [...updateParts(header(1, 50), delta(2), 8)];
    const chunks = (tensors: NamedTensor[]): UpdatePart[] =>
      [...tensorChunks(tensors, 8)].map((chunk) => ({ chunk }));
    const cases: Array<[string, () => UpdatePart[], grpc.status, RegExp, string?]> = [
      [
        'a stream without a header',
        () => chunks(delta(1)),
        grpc.status.INVALID_ARGUMENT,
        /must start with an UpdateHeader/,
      ],
      [
        'a malformed chunk (payload not a multiple of 4 bytes)',
        () => {
          const parts = good();
          parts[2] = { chunk: { ...parts[2].chunk!, data: Buffer.alloc(5) } };
          return parts;
        },
        grpc.status.INVALID_ARGUMENT,
        /not a multiple of 4/,
      ],
      [
        'a NaN in the last chunk',
        () => {
          const bad = delta(1);
          bad[1].data[2] = NaN;
          return [{ header: header(1, 50) }, ...chunks(bad)];
        },
        grpc.status.INVALID_ARGUMENT,
        /tensor "b": element 2 is NaN/,
      ],
      [
        'a wrong shape',
        () => {
          const bad = delta(1);
          bad[0] = { ...bad[0], dims: [3, 2] };
          return [{ header: header(1, 50) }, ...chunks(bad)];
        },
        grpc.status.INVALID_ARGUMENT,
        /shape \[3,2\], expected \[2,3\]/,
      ],
      [
        'the wrong round',
        () => [{ header: header(2, 50) }, ...chunks(delta(1))],
        grpc.status.FAILED_PRECONDITION,
        /round: got 2, the open round is 1/,
      ],
      [
        'an unknown encoding',
        () => [{ header: header(1, 50, { encoding: 'topk' }) }, ...chunks(delta(1))],
        grpc.status.INVALID_ARGUMENT,
        /encoding: got "topk", expected one of f32/,
      ],
      [
        'a missing tensor',
        () => [{ header: header(1, 50) }, ...chunks(delta(1).slice(0, 1))],
        grpc.status.INVALID_ARGUMENT,
        /ended early: missing tensor "b"/,
      ],
      [
        'a zero example count',
        () => [{ header: header(1, 0) }, ...chunks(delta(1))],
        grpc.status.INVALID_ARGUMENT,
        /examples: got 0/,
      ],
      [
        'an update whose L2 norm exceeds the bound',
        () => [{ header: header(1, 50) }, ...chunks(delta(20))],
        grpc.status.INVALID_ARGUMENT,
        /update L2 norm 204\.9\d* exceeds the bound 100/,
      ],
      [
        'a site that is not a participant',
        good,
        grpc.status.PERMISSION_DENIED,
        /"gamma" is not a participant/,
        'gamma',
      ],
    ];

    test.each(cases)('%s', async (_name, parts, code, message, sender = 'beta') => {
      h = await start({ maxUpdateNorm: 100 });
      await startRound(h, 1, ['alpha', 'beta'], 2);
      await h.site('alpha').pushUpdate(header(1, 100), delta(1), 8);
      const before = h.aggregator.aggregateSnapshot();

      await expectRejected(h.site(sender).pushParts(parts()), code, message);

      const after = h.aggregator.aggregateSnapshot();
      expect(after.updates).toBe(1);
      expect(Buffer.from(after.sum.buffer).equals(Buffer.from(before.sum.buffer))).toBe(true);
      expect(after.weight).toBe(before.weight);
    });

    test('a duplicate update from a site that already reported', async () => {
      h = await start();
      await startRound(h, 1, ['alpha', 'beta'], 2);
      await h.site('alpha').pushUpdate(header(1, 100), delta(1), 8);
      const before = h.aggregator.aggregateSnapshot();
      await expectRejected(
        h.site('alpha').pushUpdate(header(1, 100), delta(5), 8),
        grpc.status.ALREADY_EXISTS,
        /already sent an update for round 1/,
      );
      const after = h.aggregator.aggregateSnapshot();
      expect(Buffer.from(after.sum.buffer).equals(Buffer.from(before.sum.buffer))).toBe(true);
    });

    test('a stream the sender aborts half way, after valid chunks were received', async () => {
      h = await start();
      await startRound(h, 1, ['alpha', 'beta'], 2);
      await h.site('alpha').pushUpdate(header(1, 100), delta(1), 8);
      const before = h.aggregator.aggregateSnapshot();
      await expect(h.site('beta').pushParts(good(), { abortAfter: 3 })).rejects.toMatchObject({
        code: grpc.status.CANCELLED,
      });
      // The aggregator sees the cancellation asynchronously; the round must still take beta's
      // real update afterwards, and the mean must be exactly alpha's and that one.
      const result = nextResult(h.control, 1);
      await h.site('beta').pushUpdate(header(1, 300), delta(-1), 8);
      const r = await result;
      expect(before.updates).toBe(1);
      expect(r.accepted).toEqual(['alpha', 'beta']);
      const expected = model().map((t, ti) =>
        Array.from(t.data, (v, i) =>
          Math.fround(v + (100 * delta(1)[ti].data[i] + 300 * delta(-1)[ti].data[i]) / 400),
        ),
      );
      expect(h.aggregator.globalModel().map((t) => Array.from(t.data))).toEqual(expected);
    });
  });

  test('a sender that stalls is dropped after the idle timeout and frees its staging buffer', async () => {
    h = await start({ stagingSlots: 1, updateIdleTimeoutMs: 500 });
    await startRound(h, 1, ['alpha', 'beta'], 2);
    const Federation = loadProtocol().Federation;
    const raw = new Federation(
      h.address,
      clientCredentials(tls(certs.sites.beta)),
      CHANNEL_OPTIONS,
    ) as unknown as {
      pushUpdate(
        cb: (err: grpc.ServiceError | null) => void,
      ): grpc.ClientWritableStream<UpdatePart>;
      close(): void;
    };
    const stalled = new Promise<grpc.ServiceError | null>((resolve) => {
      const call = raw.pushUpdate((err) => resolve(err));
      call.write({ header: header(1, 10) });
    });
    // With one staging buffer taken by beta's stalled stream, alpha's update can only go
    // through once that stream is dropped.
    await new Promise((resolve) => setTimeout(resolve, 200));
    const order: string[] = [];
    const result = nextResult(h.control, 1);
    const alpha = h
      .site('alpha')
      .pushUpdate(header(1, 100), delta(1), 8)
      .then(() => order.push('alpha'));
    const dropped = await stalled;
    order.push('beta dropped');
    expect(dropped).toMatchObject({
      code: grpc.status.DEADLINE_EXCEEDED,
      details: 'no update message for 0.5s',
    });
    await alpha;
    expect(order).toEqual(['beta dropped', 'alpha']);
    await h.site('beta').pushUpdate(header(1, 100), delta(1), 8);
    expect((await result).accepted).toEqual(['alpha', 'beta']);
    raw.close();
  });

  test('at the deadline a round closes with the quorum in, and fails below it', async () => {
    h = await start();
    await startRound(h, 1, ['alpha', 'beta', 'gamma'], 2, 3000);
    const closed = nextResult(h.control, 1);
    await h.site('alpha').pushUpdate(header(1, 10), delta(1), 8);
    await h.site('beta').pushUpdate(header(1, 10), delta(1), 8);
    expect(await closed).toMatchObject({
      round: 1,
      outcome: 'closed',
      accepted: ['alpha', 'beta'],
    });

    await startRound(h, 2, ['alpha', 'beta', 'gamma'], 2, 2000);
    const failed = nextResult(h.control, 2);
    await h.site('alpha').pushUpdate(header(2, 10), delta(1), 8);
    expect(await failed).toMatchObject({
      round: 2,
      outcome: 'failed',
      reason: expect.stringMatching(/quorum not reached: 1 of 2/),
    });
    expect((await h.control.getStatus()).completedRound).toBe(1);
  });

  test('a peer without a certificate, or with one from another CA, is refused', async () => {
    h = await start();
    await startRound(h, 1, ['alpha'], 1);
    const noCert = new FederationClient({
      address: h.address,
      tls: {
        ca: Buffer.from(certs.ca.cert),
        cert: undefined as unknown as Buffer,
        key: undefined as unknown as Buffer,
      },
    });
    const foreign = new FederationClient({ address: h.address, tls: tls(otherCerts.sites.alpha) });
    const plain = new FederationClient({ address: h.address, insecureDevSite: 'alpha' });
    try {
      for (const client of [noCert, foreign, plain]) {
        await expect(client.pushUpdate(header(1, 10), delta(1), 8)).rejects.toMatchObject({
          code: grpc.status.UNAVAILABLE,
        });
      }
      expect(h.aggregator.aggregateSnapshot().updates).toBe(0);
    } finally {
      for (const c of [noCert, foreign, plain]) c.close();
    }
  });

  test('only a site certificate of this job can join, and it joins for this job only', async () => {
    h = await start();
    const joinError = (client: FederationClient, job: string) =>
      new Promise<grpc.ServiceError>((resolve) =>
        client
          .join(job)
          .on('error', resolve)
          .on('data', () => undefined),
      );
    const coordinator = new FederationClient({ address: h.address, tls: tls(certs.coordinator) });
    try {
      expect(await joinError(coordinator, JOB)).toMatchObject({
        code: grpc.status.PERMISSION_DENIED,
        details: `caller is the coordinator of job "${JOB}": expected a site certificate of job "${JOB}"`,
      });
      expect(await joinError(h.site('alpha'), 'other-job')).toMatchObject({
        code: grpc.status.INVALID_ARGUMENT,
        details: `job: got "other-job", expected "${JOB}"`,
      });
    } finally {
      coordinator.close();
    }
  });

  test('a site certificate cannot drive rounds', async () => {
    h = await start();
    const impostor = new ControlClient({ address: h.address, tls: tls(certs.sites.alpha) });
    try {
      await expectRejected(
        impostor.startRound({
          job: JOB,
          round: 1,
          participants: ['alpha'],
          deadlineUnixMs: Date.now() + 5000,
          minSites: 1,
        }),
        grpc.status.PERMISSION_DENIED,
        /expected the coordinator certificate/,
      );
    } finally {
      impostor.close();
    }
  });

  test('a restarted aggregator resumes from its newest checkpoint, strategy state included', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'flotilla-ckpt-'));
    h = await start({ checkpointDir: dir, strategy: 'fedadam' });
    await startRound(h, 1, ['alpha'], 1);
    const r1 = nextResult(h.control, 1);
    await h.site('alpha').pushUpdate(header(1, 10), delta(1), 8);
    await r1;
    const afterRound1 = h.aggregator.globalModel();
    h.close();

    h = await start({ checkpointDir: dir, strategy: 'fedadam' });
    expect(await h.control.getStatus()).toMatchObject({ completedRound: 1, openRound: 0 });
    expect(h.aggregator.globalModel()).toEqual(afterRound1);
    expect(await nextResult(h.control, 1)).toMatchObject({ round: 1, outcome: 'closed' });
    await expectRejected(
      h.control.startRound({
        job: JOB,
        round: 1,
        participants: ['alpha'],
        deadlineUnixMs: Date.now() + 5000,
        minSites: 1,
      }),
      grpc.status.FAILED_PRECONDITION,
      /round: got 1, expected 2/,
    );
    fs.rmSync(dir, { recursive: true, force: true });
  });
});
