import * as fs from 'fs';
import * as path from 'path';
import { parse, parseAllDocuments } from 'yaml';
import * as os from 'os';
import { buildCrd, CRD_FILES, JsonSchema, renderCrd } from '../../../operator/api/crd';
import { writeCrds } from '../../../operator/api/generate-crd';
import { parseManifest } from '../../../federation/job/manifest';
import { FederatedJob } from '../../../operator/api/federatedjob';
import { runtimeManifest } from '../../../operator/controller/builders';
import { admit, defaultErrors } from './crd-admission';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const crd = buildCrd();
const version = crd.spec.versions[0];
const schema = version.schema.openAPIV3Schema;

type Json = Record<string, unknown>;

/** Every schema node below `node`, with its field path. */
function* nodes(node: Json, at = ''): Generator<[string, Json]> {
  yield [at, node];
  for (const [name, child] of Object.entries((node.properties as Record<string, Json>) ?? {})) {
    yield* nodes(child, `${at}.${name}`);
  }
  if (node.items) yield* nodes(node.items as Json, `${at}[]`);
  if (typeof node.additionalProperties === 'object')
    yield* nodes(node.additionalProperties as Json, `${at}{}`);
}

/** A small valid job; tests change one thing in it. */
function job(spec: Json = {}, name = 'fmnist'): Json {
  return {
    apiVersion: 'flotilla.dev/v1alpha1',
    kind: 'FederatedJob',
    metadata: { name },
    spec: {
      model: { zoo: 'mlp', inputShape: [1, 28, 28], numClasses: 10 },
      sites: [
        { name: 'site-a', data: '/data/a' },
        { name: 'site-b', data: '/data/b' },
        { name: 'site-c', data: '/data/c' },
      ],
      rounds: 5,
      ...spec,
    },
  };
}

function examples(): Array<[string, string]> {
  const dir = path.join(ROOT, 'examples');
  return fs
    .readdirSync(dir)
    .filter((f) => /\.ya?ml$/.test(f))
    .map((f) => [f, fs.readFileSync(path.join(dir, f), 'utf8')] as [string, string])
    .filter(([, text]) =>
      parseAllDocuments(text).some((d) => (d.toJS() as Json | null)?.kind === 'FederatedJob'),
    );
}

describe('the FederatedJob CRD', () => {
  test.each(CRD_FILES)('%s is what the types generate (run `make crds` after a change)', (file) => {
    const checkedIn = fs.readFileSync(path.join(ROOT, file), 'utf8');
    expect(checkedIn).toBe(renderCrd());
  });

  test('names, short names, category, status subresource and scope follow the API contract', () => {
    expect(crd.metadata.name).toBe('federatedjobs.flotilla.dev');
    expect(crd.spec.names).toMatchObject({
      kind: 'FederatedJob',
      plural: 'federatedjobs',
      shortNames: ['fedjob', 'fedjobs', 'fj'],
      categories: ['flotilla'],
    });
    expect(crd.spec.scope).toBe('Namespaced');
    expect(version.name).toBe('v1alpha1');
    expect(version.subresources).toEqual({ status: {} });
  });

  test('printer columns show phase, round of rounds, sites ready, accuracy, loss and age', () => {
    const columns = version.additionalPrinterColumns.map((c) => [c.name, c.jsonPath] as string[]);
    expect(columns).toEqual([
      ['Phase', '.status.phase'],
      ['Round', '.status.roundProgress'],
      ['Sites', '.status.sitesReady'],
      ['Accuracy', '.status.metrics.accuracy'],
      ['Loss', '.status.metrics.loss'],
      ['Age', '.metadata.creationTimestamp'],
    ]);
    // Each status column reads a field the status schema declares.
    const declared = new Set([...nodes(schema)].map(([at]) => at));
    for (const [, jsonPath] of columns) {
      if (jsonPath.startsWith('.status')) expect(declared).toContain(jsonPath);
    }
  });

  test('every field has a description, so kubectl explain can teach it', () => {
    const missing = [...nodes(schema)]
      .filter(
        ([at, node]) => !['', '.metadata'].includes(at) && !at.endsWith('{}') && !node.description,
      )
      .map(([at]) => at);
    expect(missing).toEqual([]);
  });

  test('a field with a default says it in its description, since kubectl explain omits it', () => {
    const site = (schema.properties as Record<string, Json>).spec as Json;
    const gpus = [...nodes(site)].find(([at]) => at === '.sites[].gpus')![1];
    expect(gpus.description).toMatch(/ Default: 1\.$/);
    for (const [at, node] of nodes(schema)) {
      if (['string', 'number', 'boolean'].includes(typeof node.default)) {
        expect({ at, says: /\bDefault\b/.test(node.description as string) }).toEqual({
          at,
          says: true,
        });
      }
    }
  });

  test('the schema is structural: every node has a type, no anyOf, const or patternProperties', () => {
    for (const [at, node] of nodes(schema)) {
      expect({ at, type: typeof node.type }).toEqual({ at, type: 'string' });
      for (const banned of ['anyOf', 'oneOf', 'allOf', 'const', 'patternProperties', '$ref']) {
        expect({ at, banned, present: banned in node }).toEqual({ at, banned, present: false });
      }
    }
  });

  test('a field with a default is never listed as required', () => {
    for (const [at, node] of nodes(schema)) {
      const props = (node.properties as Record<string, Json>) ?? {};
      for (const name of (node.required as string[]) ?? []) {
        expect({ at, name, default: props[name].default }).toEqual({
          at,
          name,
          default: undefined,
        });
      }
    }
  });

  test('every default passes the CEL rules of its field, as the API server demands', () => {
    expect(defaultErrors(schema)).toEqual([]);
  });

  test('every CEL rule that reports at a fieldPath points at a declared field', () => {
    for (const [at, node] of nodes(schema)) {
      const declared = new Set([...nodes(node)].map(([p]) => p));
      for (const rule of (node['x-kubernetes-validations'] as Json[]) ?? []) {
        if (rule.fieldPath)
          expect({ at, path: declared.has(rule.fieldPath as string) }).toEqual({ at, path: true });
      }
    }
  });
});

describe('the CRD schema and the manifest parser take the same manifests', () => {
  const found = examples();

  test('examples/ holds at least one FederatedJob', () => {
    expect(found.length).toBeGreaterThan(0);
  });

  // A cluster manifest reaches the runtime as the operator hands it to the pods (its
  // Kubernetes-only fields left out); a simulation manifest (one with spec.partition) is read
  // by `flotilla simulate` as it is.
  test.each(found)('examples/%s passes the CRD schema and the runtime parser', (file, text) => {
    for (const doc of parseAllDocuments(text)) {
      const object = doc.toJS() as Json;
      if (object?.kind !== 'FederatedJob') continue;
      const admitted = admit(schema, object);
      expect(admitted.errors).toEqual([]);
      if ((object.spec as Json)?.partition !== undefined) {
        expect(() => parseManifest(text, path.join(ROOT, 'examples'), file)).not.toThrow();
      } else {
        const runtime = runtimeManifest(admitted.object as unknown as FederatedJob);
        expect(() => parseManifest(JSON.stringify(runtime), '/job', file)).not.toThrow();
      }
    }
  });

  test('the API server and the parser fill in the same defaults', () => {
    const manifest = job();
    const stored = admit(schema, manifest).object.spec as Json;
    const parsed = parseManifest(JSON.stringify(manifest), '/').spec;
    const pick = (s: Json | typeof parsed) => {
      const v = s as Json & { training: Json; aggregation: Json; failurePolicy: Json; model: Json };
      return {
        minSites: v.minSites,
        roundTimeoutSeconds: v.roundTimeoutSeconds,
        seed: v.seed,
        modelSeed: v.model.seed,
        localEpochs: v.training.localEpochs,
        batchSize: v.training.batchSize,
        optimizer: v.training.optimizer,
        momentum: v.training.momentum,
        strategy: v.aggregation.strategy,
        maxRoundRetries: v.failurePolicy.maxRoundRetries,
      };
    };
    expect(pick(stored)).toEqual(pick(parsed));
  });
});

describe('the CRD schema refuses bad specs with a message that names the field', () => {
  const cases: Array<[string, Json, string]> = [
    [
      'duplicate site names',
      {
        sites: [
          { name: 'a', data: '/d' },
          { name: 'a', data: '/e' },
        ],
        minSites: 1,
      },
      'spec.sites: site names must be unique',
    ],
    ['more minSites than sites', { minSites: 4 }, 'spec.minSites: must be no more than'],
    [
      'sitesPerRound below minSites',
      { minSites: 2, sitesPerRound: 1 },
      'spec.sitesPerRound: must lie between spec.minSites',
    ],
    [
      'sitesPerRound above the number of sites',
      { sitesPerRound: 4 },
      'spec.sitesPerRound: must lie between spec.minSites',
    ],
    [
      'fedprox without proximalMu',
      { aggregation: { strategy: 'fedprox' } },
      'spec.training.proximalMu: is required with strategy fedprox',
    ],
    [
      'a parameter the strategy does not take',
      { aggregation: { strategy: 'fedavg', params: { beta1: 0.9 } } },
      'spec.aggregation.params: names a parameter the strategy does not take',
    ],
    [
      'a server learning rate of 0',
      { aggregation: { strategy: 'fedadam', params: { eta: 0 } } },
      'spec.aggregation.params: eta and tau must be > 0',
    ],
    [
      'two model sources',
      { model: { zoo: 'mlp', onnx: '/m.onnx', inputShape: [4], numClasses: 2 } },
      'spec.model: must name exactly one model source',
    ],
    [
      'a zoo model without its input shape',
      { model: { zoo: 'cnn', numClasses: 10 } },
      'spec.model.zoo: a zoo model needs inputShape and numClasses',
    ],
    [
      'a site name that is not a DNS label',
      { sites: [{ name: 'Site_C', data: '/d' }] },
      'spec.sites[0].name',
    ],
    ['an unknown field', { epochs: 3 }, 'spec.epochs: field not declared in schema'],
    ['momentum of 1', { training: { momentum: 1 } }, 'spec.training.momentum'],
    ['zero rounds', { rounds: 0 }, 'spec.rounds'],
    ['an unknown strategy', { aggregation: { strategy: 'fedsgd' } }, 'spec.aggregation.strategy'],
    [
      'an output volume without a path',
      { outputVolume: { emptyDir: {} } },
      'spec.outputVolume: outputVolume needs output',
    ],
  ];

  test.each(cases)('%s', (_name, spec, message) => {
    const { errors } = admit(schema, job(spec));
    expect(errors.join('\n')).toContain(message);
  });

  test('a job name that is not a DNS label is refused', () => {
    const { errors } = admit(schema, job({}, `a${'b'.repeat(63)}`));
    expect(errors.join('\n')).toContain('metadata.name must be a DNS label');
  });

  test.each(cases.slice(0, 5))('the parser refuses it too: %s', (_name, spec) => {
    expect(() => parseManifest(JSON.stringify(job(spec)), '/')).toThrow();
  });

  test('Kubernetes-only fields are accepted', () => {
    const spec = {
      sites: [
        {
          name: 'site-a',
          volume: { persistentVolumeClaim: { claimName: 'site-a-data' } },
          gpus: 2,
          nodeSelector: { 'flotilla.dev/site': 'site-a' },
          tolerations: [{ key: 'nvidia.com/gpu', operator: 'Exists', effect: 'NoSchedule' }],
          resources: { requests: { cpu: '2', memory: '4Gi' } },
        },
      ],
      trainer: { image: 'ghcr.io/flotilla/trainer:0.1.0' },
      aggregator: { resources: { limits: { memory: '2Gi' } } },
      checkpointVolume: { persistentVolumeClaim: { claimName: 'ckpt' } },
      output: '/models',
      outputVolume: { persistentVolumeClaim: { claimName: 'models' } },
      suspend: false,
      activeDeadlineSeconds: 3600,
      backoffLimit: 5,
      ttlSecondsAfterFinished: 600,
    };
    expect(admit(schema, job(spec)).errors).toEqual([]);
  });
});

describe('transition rules keep what a running job is built on', () => {
  const stored = admit(schema, job()).object;
  const update = (change: (spec: Json) => void): string[] => {
    const next = structuredClone(stored);
    change(next.spec as Json);
    return admit(schema, next, stored).errors;
  };

  test('the model cannot change', () => {
    const errors = update((s) => ((s.model as Json).numClasses = 5));
    expect(errors.join('\n')).toContain('spec.model: is immutable');
  });

  test('site names cannot change', () => {
    const errors = update((s) => ((s.sites as Json[])[2].name = 'site-z'));
    expect(errors.join('\n')).toContain('spec.sites: site names are immutable');
  });

  test('training and aggregation cannot change', () => {
    const errors = update((s) => {
      (s.training as Json).batchSize = 64;
      (s.aggregation as Json).strategy = 'fedadam';
    });
    expect(errors.join('\n')).toContain('spec.training: is immutable');
    expect(errors.join('\n')).toContain('spec.aggregation: is immutable');
  });

  test('rounds, stopping, suspend and a site placement may change', () => {
    const errors = update((s) => {
      s.rounds = 20;
      s.stopping = { targetAccuracy: 0.9 };
      s.suspend = true;
      (s.sites as Json[])[0].nodeSelector = { pool: 'gpu' };
    });
    expect(errors).toEqual([]);
  });
});

describe('make crds', () => {
  test('writes every CRD file, then finds nothing to change; --check names a stale one', () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'flotilla-crds-'));
    try {
      expect(writeCrds(root, false)).toEqual(CRD_FILES);
      for (const file of CRD_FILES) {
        expect(fs.readFileSync(path.join(root, file), 'utf8')).toBe(renderCrd());
      }
      expect(writeCrds(root, true)).toEqual([]);
      fs.appendFileSync(path.join(root, CRD_FILES[1]), '# edited by hand\n');
      expect(writeCrds(root, true)).toEqual([CRD_FILES[1]]);
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });
});

describe('the generated YAML', () => {
  test('parses back to the object the generator built', () => {
    expect(parse(renderCrd())).toEqual(JSON.parse(JSON.stringify(crd)) as JsonSchema);
  });
});
