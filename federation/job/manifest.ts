import * as fs from 'fs';
import * as path from 'path';
import { parseDocument } from 'yaml';
import { PARTITION_SCHEMES, PartitionScheme } from '../data/partition';
import { ZOO_MODELS, ZooModelName } from '../engine/zoo';
import {
  resolveStrategyParams,
  STRATEGY_NAMES,
  StrategyName,
  StrategyParams,
} from '../aggregation/strategies';

/** The API group/version and kind of a FederatedJob. */
export const API_VERSION = 'flotilla.dev/v1alpha1';
export const KIND = 'FederatedJob';

/** ModelSpec names the model: a zoo model built for the data's shape, or a forward ONNX file. */
export type ModelSpec =
  | { zoo: ZooModelName; inputShape: number[]; numClasses: number; seed: number }
  | { onnx: string; seed: number };

/** SiteSpec is one site: its name (a DNS label) and where its data lies on that site. */
export interface SiteSpec {
  name: string;
  /** Dataset directory; for simulation it may be left out when `partition` fills it in. */
  data?: string;
}

export interface TrainingSpec {
  /** Passes over the local data per round. Default 1. */
  localEpochs: number;
  /** Default 32. */
  batchSize: number;
  /** Default sgd. */
  optimizer: 'sgd' | 'adam';
  /** Default 0.05 for sgd, 0.001 for adam. */
  learningRate: number;
  /** SGD momentum; default 0. */
  momentum: number;
  /** FedProx's mu; default 0 (no proximal term). */
  proximalMu: number;
}

/** PartitionSpec asks `flotilla simulate` to split one dataset into the job's sites. */
export interface PartitionSpec {
  /** Dataset directory with a train split (and a test split for held-out evaluation). */
  dataset: string;
  scheme: PartitionScheme;
  alpha?: number;
  seed: number;
  /** Use only this many training examples (a seeded sample), to keep trial runs short. */
  maxExamples?: number;
  /** Use only this many test examples for held-out evaluation. */
  maxTestExamples?: number;
}

/** FederatedJobSpec is the spec of a FederatedJob, defaults filled in. */
export interface FederatedJobSpec {
  model: ModelSpec;
  sites: SiteSpec[];
  /** Rounds to run. */
  rounds: number;
  /** Quorum: updates needed for a round to close at its deadline. Default 1. */
  minSites: number;
  /** Participants per round; default every site. */
  sitesPerRound: number;
  /** Default 600. */
  roundTimeoutSeconds: number;
  training: TrainingSpec;
  /** maxUpdateNorm: updates with a larger L2 norm are rejected; unset means no bound. */
  aggregation: { strategy: StrategyName; params: StrategyParams; maxUpdateNorm?: number };
  stopping: { targetAccuracy?: number };
  /** How many times a round that missed its quorum is retried before the job fails. Default 2. */
  failurePolicy: { maxRoundRetries: number };
  /** Held-out dataset directory the aggregator evaluates each global model on. */
  evaluation?: { data: string; maxExamples?: number };
  partition?: PartitionSpec;
  /** Seeds participant selection. Default 0. */
  seed: number;
  /** Where the final model goes (a directory); simulate defaults to its output directory. */
  output?: string;
}

/** FederatedJob is a parsed, validated manifest. */
export interface FederatedJob {
  apiVersion: typeof API_VERSION;
  kind: typeof KIND;
  metadata: { name: string; namespace?: string };
  spec: FederatedJobSpec;
}

/** ManifestError names the field at fault, the value seen and what was expected. */
export class ManifestError extends Error {
  override readonly name = 'ManifestError';
}

const DNS_LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

type Obj = Record<string, unknown>;

function show(v: unknown): string {
  return v === undefined ? 'nothing' : JSON.stringify(v);
}

function fail(field: string, message: string): never {
  throw new ManifestError(`${field}: ${message}`);
}

function object(v: unknown, field: string, optional = false): Obj | undefined {
  if (v === undefined || v === null) {
    if (optional) return undefined;
    fail(field, 'is required');
  }
  if (typeof v !== 'object' || Array.isArray(v)) fail(field, `must be a mapping, got ${show(v)}`);
  return v as Obj;
}

function int(v: unknown, field: string, min: number, fallback?: number): number {
  if (v === undefined && fallback !== undefined) return fallback;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) {
    fail(field, `must be an integer >= ${min}, got ${show(v)}`);
  }
  return v;
}

function num(v: unknown, field: string, lo: number, hi: number, fallback?: number): number {
  if (v === undefined && fallback !== undefined) return fallback;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < lo || v > hi) {
    fail(field, `must be a number in [${lo}, ${hi}], got ${show(v)}`);
  }
  return v;
}

function str(v: unknown, field: string, fallback?: string): string {
  if (v === undefined && fallback !== undefined) return fallback;
  if (typeof v !== 'string' || v === '') fail(field, `must be a non-empty string, got ${show(v)}`);
  return v;
}

function oneOf<T extends string>(
  v: unknown,
  field: string,
  allowed: readonly T[],
  fallback?: T,
): T {
  if (v === undefined && fallback !== undefined) return fallback;
  if (!allowed.includes(v as T))
    fail(field, `must be one of ${allowed.join(', ')}, got ${show(v)}`);
  return v as T;
}

function noUnknownKeys(o: Obj, field: string, known: string[]): void {
  for (const key of Object.keys(o)) {
    if (!known.includes(key))
      fail(`${field}.${key}`, `unknown field, expected one of ${known.join(', ')}`);
  }
}

/**
 * parseManifest parses and validates a FederatedJob manifest (YAML or JSON). Relative paths
 * in it are resolved against `baseDir` (the manifest's directory). Errors name the field:
 * `spec.sites[2].name: must be a DNS label, got "Site_C"`.
 */
export function parseManifest(text: string, baseDir: string, source = 'manifest'): FederatedJob {
  const doc = parseDocument(text);
  if (doc.errors.length > 0) throw new ManifestError(`${source}: ${doc.errors[0].message}`);
  const root = object(doc.toJS(), source)!;
  if (root.apiVersion !== API_VERSION)
    fail('apiVersion', `must be ${API_VERSION}, got ${show(root.apiVersion)}`);
  if (root.kind !== KIND) fail('kind', `must be ${KIND}, got ${show(root.kind)}`);
  const metadata = object(root.metadata, 'metadata')!;
  const name = str(metadata.name, 'metadata.name');
  if (!DNS_LABEL.test(name))
    fail(
      'metadata.name',
      `must be a DNS label (lowercase letters, digits, dashes), got ${show(name)}`,
    );
  const spec = parseSpec(object(root.spec, 'spec')!, baseDir);
  const namespace =
    metadata.namespace === undefined ? undefined : str(metadata.namespace, 'metadata.namespace');
  return { apiVersion: API_VERSION, kind: KIND, metadata: { name, namespace }, spec };
}

/** loadManifest reads and parses a manifest file. */
export function loadManifest(file: string): FederatedJob {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new ManifestError(`${file}: ${(err as Error).message}`);
  }
  return parseManifest(text, path.dirname(path.resolve(file)), file);
}

function resolvePath(p: string, baseDir: string): string {
  return path.resolve(baseDir, p);
}

function parseSpec(s: Obj, baseDir: string): FederatedJobSpec {
  noUnknownKeys(s, 'spec', [
    'model',
    'sites',
    'rounds',
    'minSites',
    'sitesPerRound',
    'roundTimeoutSeconds',
    'training',
    'aggregation',
    'stopping',
    'failurePolicy',
    'evaluation',
    'partition',
    'seed',
    'output',
  ]);
  const model = parseModel(object(s.model, 'spec.model')!, baseDir);
  const partition = parsePartition(object(s.partition, 'spec.partition', true), baseDir);

  if (!Array.isArray(s.sites) || s.sites.length === 0)
    fail('spec.sites', `must be a non-empty list, got ${show(s.sites)}`);
  const names = new Set<string>();
  const sites = s.sites.map((raw, i): SiteSpec => {
    const field = `spec.sites[${i}]`;
    const site = object(raw, field)!;
    noUnknownKeys(site, field, ['name', 'data']);
    const siteName = str(site.name, `${field}.name`);
    if (!DNS_LABEL.test(siteName))
      fail(
        `${field}.name`,
        `must be a DNS label (lowercase letters, digits, dashes), got ${show(siteName)}`,
      );
    if (names.has(siteName)) fail(`${field}.name`, `duplicate site name ${show(siteName)}`);
    names.add(siteName);
    if (site.data === undefined && !partition)
      fail(`${field}.data`, 'is required unless spec.partition fills it in');
    return {
      name: siteName,
      data:
        site.data === undefined ? undefined : resolvePath(str(site.data, `${field}.data`), baseDir),
    };
  });

  const rounds = int(s.rounds, 'spec.rounds', 1);
  const sitesPerRound = int(s.sitesPerRound, 'spec.sitesPerRound', 1, sites.length);
  if (sitesPerRound > sites.length)
    fail(
      'spec.sitesPerRound',
      `must be <= the number of sites (${sites.length}), got ${sitesPerRound}`,
    );
  const minSites = int(s.minSites, 'spec.minSites', 1, 1);
  if (minSites > sitesPerRound)
    fail('spec.minSites', `must be <= spec.sitesPerRound (${sitesPerRound}), got ${minSites}`);

  const aggregation = object(s.aggregation, 'spec.aggregation', true) ?? {};
  noUnknownKeys(aggregation, 'spec.aggregation', ['strategy', 'params', 'maxUpdateNorm']);
  const strategy = oneOf(
    aggregation.strategy,
    'spec.aggregation.strategy',
    STRATEGY_NAMES,
    'fedavg',
  );
  const params = (object(aggregation.params, 'spec.aggregation.params', true) ??
    {}) as StrategyParams;
  try {
    resolveStrategyParams(strategy, params);
  } catch (err) {
    throw new ManifestError((err as Error).message);
  }

  const stopping = object(s.stopping, 'spec.stopping', true) ?? {};
  noUnknownKeys(stopping, 'spec.stopping', ['targetAccuracy']);
  const failurePolicy = object(s.failurePolicy, 'spec.failurePolicy', true) ?? {};
  noUnknownKeys(failurePolicy, 'spec.failurePolicy', ['maxRoundRetries']);
  const evaluation = object(s.evaluation, 'spec.evaluation', true);
  if (evaluation) noUnknownKeys(evaluation, 'spec.evaluation', ['data', 'maxExamples']);

  return {
    model,
    sites,
    rounds,
    minSites,
    sitesPerRound,
    roundTimeoutSeconds: int(s.roundTimeoutSeconds, 'spec.roundTimeoutSeconds', 1, 600),
    training: parseTraining(object(s.training, 'spec.training', true) ?? {}, strategy),
    aggregation: {
      strategy,
      params,
      maxUpdateNorm:
        aggregation.maxUpdateNorm === undefined
          ? undefined
          : num(aggregation.maxUpdateNorm, 'spec.aggregation.maxUpdateNorm', 1e-12, 1e300),
    },
    stopping: {
      targetAccuracy:
        stopping.targetAccuracy === undefined
          ? undefined
          : num(stopping.targetAccuracy, 'spec.stopping.targetAccuracy', 0, 1),
    },
    failurePolicy: {
      maxRoundRetries: int(
        failurePolicy.maxRoundRetries,
        'spec.failurePolicy.maxRoundRetries',
        0,
        2,
      ),
    },
    evaluation: evaluation
      ? {
          data: resolvePath(str(evaluation.data, 'spec.evaluation.data'), baseDir),
          maxExamples:
            evaluation.maxExamples === undefined
              ? undefined
              : int(evaluation.maxExamples, 'spec.evaluation.maxExamples', 1),
        }
      : undefined,
    partition,
    seed: int(s.seed, 'spec.seed', 0, 0),
    output: s.output === undefined ? undefined : resolvePath(str(s.output, 'spec.output'), baseDir),
  };
}

function parseModel(m: Obj, baseDir: string): ModelSpec {
  noUnknownKeys(m, 'spec.model', ['zoo', 'onnx', 'inputShape', 'numClasses', 'seed']);
  const seed = int(m.seed, 'spec.model.seed', 0, 0);
  if ((m.zoo === undefined) === (m.onnx === undefined))
    fail('spec.model', 'must name exactly one of zoo or onnx');
  if (m.onnx !== undefined)
    return { onnx: resolvePath(str(m.onnx, 'spec.model.onnx'), baseDir), seed };
  const zoo = oneOf(m.zoo, 'spec.model.zoo', ZOO_MODELS);
  if (!Array.isArray(m.inputShape) || m.inputShape.length === 0) {
    fail(
      'spec.model.inputShape',
      `must be a non-empty list of positive integers, got ${show(m.inputShape)}`,
    );
  }
  const inputShape = m.inputShape.map((d, i) => int(d, `spec.model.inputShape[${i}]`, 1));
  return { zoo, inputShape, numClasses: int(m.numClasses, 'spec.model.numClasses', 2), seed };
}

function parseTraining(t: Obj, strategy: StrategyName): TrainingSpec {
  noUnknownKeys(t, 'spec.training', [
    'localEpochs',
    'batchSize',
    'optimizer',
    'learningRate',
    'momentum',
    'proximalMu',
  ]);
  const optimizer = oneOf(t.optimizer, 'spec.training.optimizer', ['sgd', 'adam'] as const, 'sgd');
  const proximalMu = num(t.proximalMu, 'spec.training.proximalMu', 0, 1e6, 0);
  if (strategy === 'fedprox' && t.proximalMu === undefined) {
    fail(
      'spec.training.proximalMu',
      'is required with strategy fedprox (the proximal term is trained on the sites)',
    );
  }
  return {
    localEpochs: int(t.localEpochs, 'spec.training.localEpochs', 1, 1),
    batchSize: int(t.batchSize, 'spec.training.batchSize', 1, 32),
    optimizer,
    learningRate: num(
      t.learningRate,
      'spec.training.learningRate',
      1e-12,
      100,
      optimizer === 'sgd' ? 0.05 : 0.001,
    ),
    momentum: num(t.momentum, 'spec.training.momentum', 0, 0.999999, 0),
    proximalMu,
  };
}

function parsePartition(p: Obj | undefined, baseDir: string): PartitionSpec | undefined {
  if (!p) return undefined;
  noUnknownKeys(p, 'spec.partition', [
    'dataset',
    'scheme',
    'alpha',
    'seed',
    'maxExamples',
    'maxTestExamples',
  ]);
  return {
    dataset: resolvePath(str(p.dataset, 'spec.partition.dataset'), baseDir),
    scheme: oneOf(p.scheme, 'spec.partition.scheme', PARTITION_SCHEMES, 'iid'),
    alpha: p.alpha === undefined ? undefined : num(p.alpha, 'spec.partition.alpha', 1e-6, 1e6),
    seed: int(p.seed, 'spec.partition.seed', 0, 0),
    maxExamples:
      p.maxExamples === undefined ? undefined : int(p.maxExamples, 'spec.partition.maxExamples', 1),
    maxTestExamples:
      p.maxTestExamples === undefined
        ? undefined
        : int(p.maxTestExamples, 'spec.partition.maxTestExamples', 1),
  };
}
