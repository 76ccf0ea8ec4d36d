import type { V1Pod } from '@kubernetes/client-node';
import { FederatedJob, MAX_HISTORY } from '../../../operator/api/federatedjob';
import {
  mergeHistory,
  newestTrainers,
  roundMetrics,
  setCondition,
  siteStatuses,
  sitesReady,
} from '../../../operator/controller/status';
import type { RoundResult } from '../../../federation/protocol/wire';

const t0 = new Date('2026-01-01T00:00:00Z');
const t1 = new Date('2026-01-01T00:01:00Z');

function trainer(site: string, attempt: number, phase: string, ready = false): V1Pod {
  return {
    metadata: {
      name: `job-${site}-${attempt}`,
      labels: { 'flotilla.dev/site': site, 'flotilla.dev/attempt': String(attempt) },
    },
    status: {
      phase,
      conditions: [{ type: 'Ready', status: ready ? 'True' : 'False' }],
    },
  };
}

const job = {
  apiVersion: 'flotilla.dev/v1alpha1',
  kind: 'FederatedJob',
  metadata: { name: 'job', namespace: 'ns', uid: 'u' },
  spec: { sites: [{ name: 'a' }, { name: 'b' }, { name: 'c' }] },
  status: { sites: [{ name: 'c', phase: 'Running', restarts: 2, lastRound: 4 }] },
} as unknown as FederatedJob;

describe('setCondition', () => {
  test('keeps lastTransitionTime while the status holds and moves it when the status flips', () => {
    const first = setCondition(undefined, 'Running', 'True', 'RoundsRunning', 'round 1', 3, t0);
    const same = setCondition(first, 'Running', 'True', 'RoundsRunning', 'round 2', 4, t1);
    expect(same).toEqual([
      {
        type: 'Running',
        status: 'True',
        reason: 'RoundsRunning',
        message: 'round 2',
        observedGeneration: 4,
        lastTransitionTime: t0.toISOString(),
      },
    ]);
    const flipped = setCondition(same, 'Running', 'False', 'RoundsCompleted', 'done', 4, t1);
    expect(flipped[0].lastTransitionTime).toBe(t1.toISOString());
    const other = setCondition(flipped, 'Succeeded', 'True', 'RoundsCompleted', 'done', 4, t1);
    expect(other.map((c) => c.type)).toEqual(['Running', 'Succeeded']);
  });
});

describe('round metrics and history', () => {
  const result = (round: number, evalAccuracy?: number): RoundResult => ({
    round,
    outcome: 'closed',
    participants: ['a', 'b'],
    accepted: ['a'],
    rejected: [],
    siteMetrics: { train_loss: 0.9, eval_accuracy: 0.4, eval_loss: 1.5 },
    evalMetrics: evalAccuracy === undefined ? {} : { accuracy: evalAccuracy, loss: 0.7 },
    examples: 600,
    siteExamples: { a: 600 },
    durationMs: 1500,
    bytesReceived: 0,
    bytesSent: 0,
    reason: '',
  });

  test('held-out accuracy and loss win over the federated ones', () => {
    expect(roundMetrics(result(2, 0.8), t1)).toEqual({
      round: 2,
      accuracy: 0.8,
      loss: 0.7,
      trainLoss: 0.9,
      participants: 1,
      examples: 600,
      durationSeconds: 1.5,
      completionTime: t1.toISOString(),
    });
    expect(roundMetrics(result(2), t1)).toMatchObject({ accuracy: 0.4, loss: 1.5 });
  });

  test('accuracy and losses keep four decimals, so the kubectl columns stay short', () => {
    const long = { ...result(3), evalMetrics: { accuracy: 0.84456789, loss: 0.40666828441619873 } };
    expect(roundMetrics(long, t1)).toMatchObject({ accuracy: 0.8446, loss: 0.4067 });
  });

  test('history keeps one entry per round, oldest first, bounded to the newest MAX_HISTORY', () => {
    const m = (round: number, accuracy = 0.1) => ({ round, accuracy });
    expect(mergeHistory([m(1), m(2)], [m(2, 0.5), m(3)])).toEqual([m(1), m(2, 0.5), m(3)]);
    const long = Array.from({ length: MAX_HISTORY + 5 }, (_, i) => m(i + 1));
    const merged = mergeHistory(long, []);
    expect(merged).toHaveLength(MAX_HISTORY);
    expect(merged[0].round).toBe(6);
  });
});

describe('site status', () => {
  test('each site shows its newest pod, what it does, and its attempt as restarts', () => {
    const pods = [
      trainer('a', 0, 'Failed'),
      trainer('a', 1, 'Running', true),
      trainer('b', 0, 'Running', true),
    ];
    const trainers = newestTrainers(pods);
    const sites = siteStatuses(job, trainers, {
      training: new Set(['a']),
      lastUpdate: new Map([['a', { round: 5, examples: 600 }]]),
      failed: new Map([['c', 'trainer failed 3 times']]),
      finished: false,
    });
    expect(sites).toEqual([
      { name: 'a', pod: 'job-a-1', phase: 'Training', restarts: 1, lastRound: 5, examples: 600 },
      { name: 'b', pod: 'job-b-0', phase: 'Running', restarts: 0 },
      { name: 'c', phase: 'Failed', restarts: 2, lastRound: 4, message: 'trainer failed 3 times' },
    ]);
    expect(sitesReady(job, trainers)).toBe('2/3');
  });
});
