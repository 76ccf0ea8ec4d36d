import * as path from 'path';
import { loadManifest, parseManifest } from '../../../federation/job/manifest';

const base = `
apiVersion: flotilla.dev/v1alpha1
kind: FederatedJob
metadata: { name: demo }
spec:
  model: { zoo: mlp, inputShape: [1, 28, 28], numClasses: 10 }
  sites:
    - { name: a, data: ./a }
    - { name: b, data: /data/b }
  rounds: 5
`;

describe('FederatedJob manifests', () => {
  test('fill in defaults and resolve data paths against the manifest directory', () => {
    const job = parseManifest(base, '/jobs');
    expect(job.metadata.name).toBe('demo');
    expect(job.spec.sites).toEqual([
      { name: 'a', data: '/jobs/a' },
      { name: 'b', data: '/data/b' },
    ]);
    expect(job.spec).toMatchObject({
      rounds: 5,
      minSites: 1,
      sitesPerRound: 2,
      roundTimeoutSeconds: 600,
      training: {
        localEpochs: 1,
        batchSize: 32,
        optimizer: 'sgd',
        learningRate: 0.05,
        momentum: 0,
        proximalMu: 0,
      },
      aggregation: { strategy: 'fedavg', params: {} },
      failurePolicy: { maxRoundRetries: 2 },
    });
  });

  test.each([
    [
      'a site name that is not a DNS label',
      base.replace('name: a,', 'name: Site_A,'),
      'spec.sites[0].name: must be a DNS label (lowercase letters, digits, dashes), got "Site_A"',
    ],
    [
      'a duplicate site',
      base.replace('name: b,', 'name: a,'),
      'spec.sites[1].name: duplicate site name "a"',
    ],
    [
      'a site without data and no partition',
      base.replace('{ name: b, data: /data/b }', '{ name: b }'),
      'spec.sites[1].data: is required unless spec.partition fills it in',
    ],
    [
      'a negative round count',
      base.replace('rounds: 5', 'rounds: -1'),
      'spec.rounds: must be an integer >= 1, got -1',
    ],
    [
      'a quorum above the sites per round',
      base + '  minSites: 3\n',
      'spec.minSites: must be <= spec.sitesPerRound (2), got 3',
    ],
    [
      'an unknown strategy',
      base + '  aggregation: { strategy: fedsgd }\n',
      'spec.aggregation.strategy: must be one of fedavg, fedavgm, fedprox, fedadagrad, fedadam, fedyogi, got "fedsgd"',
    ],
    [
      'a bad strategy parameter',
      base + '  aggregation: { strategy: fedadam, params: { beta1: 2 } }\n',
      'spec.aggregation.params.beta1: must be a number in [0, 1), got 2',
    ],
    [
      'fedprox without mu',
      base + '  aggregation: { strategy: fedprox }\n',
      'spec.training.proximalMu: is required with strategy fedprox',
    ],
    ['a misspelt field', base + '  round: 3\n', 'spec.round: unknown field'],
    [
      'the wrong kind',
      base.replace('kind: FederatedJob', 'kind: Job'),
      'kind: must be FederatedJob, got "Job"',
    ],
  ])('refuse %s, naming the field', (_name, text, message) => {
    expect(() => parseManifest(text, '/jobs')).toThrow(message);
  });

  test('the Fashion-MNIST example parses as it is', () => {
    const job = loadManifest(
      path.resolve(__dirname, '..', '..', '..', 'examples', 'fashion-mnist.yaml'),
    );
    expect(job.spec.partition).toMatchObject({ scheme: 'dirichlet', alpha: 0.5 });
    expect(job.spec.sites).toHaveLength(3);
  });
});
