import * as fs from 'fs';
import * as grpc from '@grpc/grpc-js';
import { Aggregator } from '../../../federation/aggregator/aggregator';
import { ControlDriver } from '../../../federation/coordinator/control-driver';
import {
  Coordinator,
  CoordinatorPolicy,
  decideNext,
  pickParticipants,
} from '../../../federation/coordinator/coordinator';
import { createLogger } from '../../../federation/log';
import { ControlClient, FederationClient } from '../../../federation/protocol/clients';
import {
  createJobCertificates,
  JobCertificates,
  PemPair,
  TlsFiles,
} from '../../../federation/protocol/identity';
import { RoundResult, RoundTask } from '../../../federation/protocol/wire';

const quiet = createLogger('coordinator', fs.createWriteStream('/dev/null'));

const policy: CoordinatorPolicy = {
  job: 'coord-test',
  sites: ['a', 'b', 'c'],
  rounds: 3,
  minSites: 2,
  sitesPerRound: 2,
  roundTimeoutMs: 4000,
  maxRoundRetries: 1,
  seed: 11,
};

function result(
  round: number,
  outcome: 'closed' | 'failed',
  evalMetrics: Record<string, number> = {},
): RoundResult {
  return {
    round,
    outcome,
    participants: [],
    accepted: [],
    rejected: [],
    siteMetrics: {},
    evalMetrics,
    examples: 0,
    siteExamples: {},
    durationMs: 0,
    bytesReceived: 0,
    bytesSent: 0,
    reason: outcome === 'failed' ? 'quorum not reached' : '',
  };
}

describe('round decisions', () => {
  test('continue until the last round, then stop as succeeded', () => {
    expect(decideNext(policy, result(2, 'closed'), 0)).toEqual({ action: 'continue' });
    expect(decideNext(policy, result(3, 'closed'), 0)).toMatchObject({
      action: 'stop',
      outcome: 'succeeded',
    });
  });

  test('stop early once the target accuracy is reached', () => {
    const d = decideNext(
      { ...policy, targetAccuracy: 0.8 },
      result(1, 'closed', { accuracy: 0.81 }),
      0,
    );
    expect(d).toMatchObject({
      action: 'stop',
      outcome: 'succeeded',
      reason: expect.stringContaining('target accuracy 0.8 reached in round 1'),
    });
  });

  test('retry a failed round while retries are left, then fail the job', () => {
    expect(decideNext(policy, result(2, 'failed'), 0)).toEqual({
      action: 'retry',
      reason: 'quorum not reached',
    });
    expect(decideNext(policy, result(2, 'failed'), 1)).toMatchObject({
      action: 'stop',
      outcome: 'failed',
      reason: 'round 2 failed 2 times, last: quorum not reached',
    });
  });

  test('participants are a seeded choice among healthy sites; a retry draws anew', () => {
    const sites = ['s1', 's2', 's3', 's4', 's5', 's6'];
    const first = pickParticipants(sites, 3, 1, 1, 0);
    expect(first).toHaveLength(3);
    expect(pickParticipants([...sites].reverse(), 3, 1, 1, 0)).toEqual(first);
    const draws = new Set(
      [0, 1, 2, 3, 4].map((attempt) => pickParticipants(sites, 3, 1, 1, attempt).join()),
    );
    expect(draws.size).toBeGreaterThan(1);
    expect(pickParticipants(['x'], 3, 1, 1, 0)).toEqual(['x']);
  });
});

describe('coordinator against a real aggregator', () => {
  let certs: JobCertificates;
  beforeAll(async () => {
    certs = await createJobCertificates(policy.job, policy.sites);
  });
  const tls = (pair: PemPair): TlsFiles => ({
    ca: Buffer.from(certs.ca.cert),
    cert: Buffer.from(pair.cert),
    key: Buffer.from(pair.key),
  });

  test('drives every round, retries a round that missed its quorum, and finishes the job', async () => {
    const model = [{ name: 'w', dims: [4], data: new Float32Array(4) }];
    const aggregator = new Aggregator({
      job: policy.job,
      initialModel: model,
      strategy: 'fedavg',
      tls: tls(certs.aggregator),
      logger: quiet,
    });
    const address = `127.0.0.1:${await aggregator.listen('127.0.0.1:0')}`;
    const control = new ControlClient({ address, tls: tls(certs.coordinator) });

    // Each site answers its tasks with a delta of ones, except that site "c" stays silent in
    // the first attempt of round 2, which then misses its quorum if "c" was picked.
    const sites = policy.sites.map((name) => {
      const client = new FederationClient({ address, tls: tls(certs.sites[name]) });
      const stream = client.join(policy.job);
      let finished = false;
      stream.on('data', (task: RoundTask) => {
        if (task.finished) {
          finished = true;
          return;
        }
        if (name === 'c' && task.round === 2 && !silenced) {
          silenced = true;
          return;
        }
        void client
          .pushUpdate(
            { job: policy.job, round: task.round, examples: 10, encoding: 'f32', metrics: {} },
            [{ name: 'w', dims: [4], data: Float32Array.of(1, 1, 1, 1) }],
          )
          .catch(() => undefined);
      });
      stream.on('error', (e: grpc.ServiceError) => expect(e.code).toBe(grpc.status.CANCELLED));
      return { client, stream, isFinished: () => finished };
    });
    let silenced = false;

    const started: Array<[number, string[], number]> = [];
    const driver = new ControlDriver(control);
    const coordinator = new Coordinator(
      { ...policy, sitesPerRound: 3, minSites: 3 },
      driver,
      { healthySites: async () => (await control.getStatus()).connectedSites },
      quiet,
      {
        roundStarted: (round, participants, attempt) =>
          started.push([round, participants, attempt]),
      },
    );
    try {
      const outcome = await coordinator.run();
      expect(outcome).toMatchObject({ outcome: 'succeeded', completedRound: 3 });
      expect(outcome.results.map((r) => [r.round, r.outcome])).toEqual([
        [1, 'closed'],
        [2, 'failed'],
        [2, 'closed'],
        [3, 'closed'],
      ]);
      expect(started.map(([round, , attempt]) => [round, attempt])).toEqual([
        [1, 0],
        [2, 0],
        [2, 1],
        [3, 0],
      ]);
      // Three closed rounds of FedAvg with a mean delta of ones.
      expect(Array.from(aggregator.globalModel()[0].data)).toEqual([3, 3, 3, 3]);
      await new Promise((resolve) => setTimeout(resolve, 100));
      expect(sites.every((s) => s.isFinished())).toBe(true);
    } finally {
      driver.close();
      for (const s of sites) {
        s.stream.cancel();
        s.client.close();
      }
      control.close();
      aggregator.close();
    }
  });
});
