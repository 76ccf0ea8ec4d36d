import { Static } from '@sinclair/typebox';
import type {
  V1Affinity,
  V1EnvVar,
  V1LocalObjectReference,
  V1ResourceRequirements,
  V1Toleration,
  V1Volume,
} from '@kubernetes/client-node';
import { STRATEGY_NAMES, resolveStrategyParams } from '../../federation/aggregation/strategies';
import { PARTITION_SCHEMES } from '../../federation/data/partition';
import { ZOO_MODELS } from '../../federation/engine/zoo';
import { API_VERSION, KIND } from '../../federation/job/manifest';
import { FederatedJobStatusSchema, MAX_SITES } from './federatedjob-status';
import {
  bool,
  int,
  list,
  num,
  numberMap,
  obj,
  oneOfStrings,
  opaque,
  optional,
  str,
  stringMap,
} from './openapi';

// The manifest parser of `flotilla simulate` and the runtime owns apiVersion and kind.
export { API_VERSION, KIND };

/** The API group, version and names of the FederatedJob resource. */
export const [GROUP, VERSION] = API_VERSION.split('/') as [string, string];
export const PLURAL = 'federatedjobs';
export const SINGULAR = 'federatedjob';
export const SHORT_NAMES = ['fedjob', 'fedjobs', 'fj'];
export const CATEGORIES = ['flotilla'];

// The status schema and its constants live beside the spec; users of the API import both here.
export * from './federatedjob-status';

/** Where the controller mounts things in the pods it creates. */
export const MOUNT_PATHS = {
  siteData: '/data',
  evaluationData: '/eval',
  model: '/etc/flotilla/model',
  checkpoints: '/var/lib/flotilla/checkpoints',
  job: '/etc/flotilla/job',
  tls: '/etc/flotilla/tls',
} as const;

const DNS_LABEL = '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$';

// A Volume without its name: the controller names the volumes it mounts.
type VolumeSource = Omit<V1Volume, 'name'>;

const volumeSource = (description: string) =>
  opaque<VolumeSource>({
    description:
      `${description} A Kubernetes volume source (persistentVolumeClaim, hostPath, nfs, ` +
      'configMap, csi, ...), written as in a Pod\'s volumes but without "name"; the API ' +
      'server checks it when the controller creates the pod.',
  });

// ---------------------------------------------------------------------------------------
// spec.model

// The parameter names each strategy accepts, as the runtime resolves them.
const STRATEGY_PARAMS: Record<string, string[]> = Object.fromEntries(
  STRATEGY_NAMES.map((s) => [s, Object.keys(resolveStrategyParams(s, {}))]),
);
const celStrategyParams = `{${Object.entries(STRATEGY_PARAMS)
  .map(([s, keys]) => `'${s}': [${keys.map((k) => `'${k}'`).join(', ')}]`)
  .join(', ')}}`;

const ModelSchema = obj(
  {
    zoo: optional(
      oneOfStrings(ZOO_MODELS, {
        description:
          'A model of the built-in zoo, built for spec.model.inputShape and numClasses: ' +
          'logreg (linear), mlp (two hidden layers) or cnn (two convolutions).',
      }),
    ),
    onnx: optional(
      str({
        description:
          'A forward ONNX model (inputs: a batch of samples; output: logits). With ' +
          "spec.model.volume, the file's path inside that volume; without it, a path that " +
          'exists inside the aggregator and trainer containers.',
        minLength: 1,
        maxLength: 4096,
      }),
    ),
    configMap: optional(
      obj(
        {
          name: str({
            description: "Name of the ConfigMap, in the job's namespace.",
            minLength: 1,
            maxLength: 253,
          }),
          key: str({
            description: 'The key (in binaryData) that holds the ONNX file.',
            minLength: 1,
            maxLength: 253,
          }),
        },
        {
          description:
            "A forward ONNX model kept in a ConfigMap's binaryData (at most 1 MiB, so small " +
            'models only; larger ones go in spec.model.volume).',
        },
      ),
    ),
    volume: optional(
      volumeSource(
        'A volume that holds the forward ONNX model, mounted read-only in the aggregator and ' +
          'every trainer; spec.model.onnx names the file inside it.',
      ),
    ),
    inputShape: optional(
      list(int({ description: 'One dimension of a sample.', minimum: 1 }), {
        description:
          'Shape of one sample without the batch dimension, e.g. [1, 28, 28]; zoo models only.',
        minItems: 1,
        maxItems: 8,
      }),
    ),
    numClasses: optional(
      int({ description: 'Number of classes the zoo model predicts.', minimum: 2 }),
    ),
    seed: int({
      description:
        'Seed of the initial weights of a zoo model; the same seed gives the same initial ' +
        'global model on every restart of the aggregator.',
      minimum: 0,
      default: 0,
    }),
  },
  {
    description:
      'The model to train: a zoo model, or a forward ONNX model from a path, a ConfigMap or a ' +
      'volume. Immutable.',
    rules: [
      {
        rule: '[has(self.zoo), has(self.onnx), has(self.configMap)].filter(x, x).size() == 1',
        message:
          'must name exactly one model source: zoo, onnx (optionally in volume) or configMap',
      },
      {
        rule: '!has(self.zoo) || (has(self.inputShape) && has(self.numClasses))',
        message: 'a zoo model needs inputShape and numClasses',
        fieldPath: '.zoo',
      },
      {
        rule: '!has(self.volume) || has(self.onnx)',
        message: "volume needs onnx: the model file's path inside the volume",
        fieldPath: '.volume',
      },
      {
        rule: 'self == oldSelf',
        message: 'is immutable: create a new FederatedJob to train another model',
      },
    ],
  },
);

// ---------------------------------------------------------------------------------------
// spec.sites

const SiteSchema = obj(
  {
    name: str({
      description:
        "Name of the site: a DNS label, unique in the job. It is the identity in the site's " +
        "certificate, and appears in the trainer pod's name and labels.",
      minLength: 1,
      maxLength: 63,
      pattern: DNS_LABEL,
    }),
    data: optional(
      str({
        description:
          "Directory of the site's dataset inside the trainer container. Default: where " +
          'spec.sites[].volume is mounted (spec.sites[].mountPath).',
        minLength: 1,
        maxLength: 4096,
      }),
    ),
    volume: optional(
      volumeSource(
        "The volume with the site's data, mounted read-only in the trainer at " +
          'spec.sites[].mountPath. The data never leaves it: only model updates do.',
      ),
    ),
    mountPath: str({
      description: 'Where spec.sites[].volume is mounted in the trainer container.',
      default: MOUNT_PATHS.siteData,
      maxLength: 4096,
      pattern: '^/',
    }),
    gpus: int({
      description: 'GPUs the trainer requests (nvidia.com/gpu); 0 trains on CPU.',
      minimum: 0,
      maximum: 64,
      default: 1,
    }),
    nodeSelector: optional(
      stringMap({
        description:
          'Node labels the trainer pod must match: this is how a site is pinned to its own ' +
          'nodes (for example flotilla.dev/site: <name>).',
      }),
    ),
    tolerations: optional(
      list(opaque<V1Toleration>({ description: 'A Kubernetes Toleration.' }), {
        description: 'Tolerations of the trainer pod, for tainted GPU or site node pools.',
        maxItems: 32,
      }),
    ),
    affinity: optional(
      opaque<V1Affinity>({
        description: 'A Kubernetes Affinity for the trainer pod (node and pod affinity).',
      }),
    ),
    resources: optional(
      opaque<V1ResourceRequirements>({
        description:
          "CPU and memory requests and limits of this site's trainer (a Kubernetes " +
          'ResourceRequirements); overrides spec.trainer.resources. GPUs come from ' +
          'spec.sites[].gpus.',
      }),
    ),
  },
  { description: 'One site: where its trainer runs and where its data is.' },
);

// ---------------------------------------------------------------------------------------
// spec.training, spec.aggregation and the rest of the runtime settings

const TrainingSchema = obj(
  {
    localEpochs: int({
      description: 'Passes over the local data per round.',
      minimum: 1,
      default: 1,
    }),
    batchSize: int({ description: 'Samples per training step.', minimum: 1, default: 32 }),
    optimizer: oneOfStrings(['sgd', 'adam'] as const, {
      description: 'Optimizer of the local training: sgd or adam.',
      default: 'sgd',
    }),
    learningRate: optional(
      num({
        description: 'Learning rate of the local optimizer. Default 0.05 for sgd, 0.001 for adam.',
        minimum: 1e-12,
        maximum: 100,
      }),
    ),
    momentum: num({
      description: 'SGD momentum, in [0, 1).',
      minimum: 0,
      maximum: 1,
      exclusiveMaximum: true,
      default: 0,
    }),
    proximalMu: optional(
      num({
        description:
          "FedProx's mu: weight of the proximal term that keeps local models near the global " +
          'one. Required with strategy fedprox; 0 (none) otherwise.',
        minimum: 0,
        maximum: 1e6,
      }),
    ),
  },
  {
    description: 'How each site trains locally in a round. Immutable.',
    default: {},
    rules: [{ rule: 'self == oldSelf', message: 'is immutable once the job is created' }],
  },
);

const AggregationSchema = obj(
  {
    strategy: oneOfStrings(STRATEGY_NAMES, {
      description:
        'How updates are folded into the next global model: fedavg, fedavgm (server ' +
        'momentum), fedprox (fedavg with a proximal term on the sites), fedadagrad, fedadam, ' +
        'fedyogi (adaptive server optimizers).',
      default: 'fedavg',
    }),
    params: numberMap({
      maxProperties: 8,
      description:
        'Parameters of the strategy: eta (server learning rate, > 0) for all; momentum ' +
        '(fedavgm), beta1, beta2, tau (adaptive ones). beta and momentum lie in [0, 1), eta ' +
        "and tau are > 0. Missing ones take the strategy's defaults.",
      default: {},
    }),
  },
  {
    description: 'The server-side strategy. Immutable.',
    default: {},
    // The API server checks the default ({}) against these rules before it fills in the
    // nested defaults, so a rule must not assume params is there.
    rules: [
      {
        rule: `!has(self.params) || self.params.all(k, k in ${celStrategyParams}[self.strategy])`,
        message:
          'names a parameter the strategy does not take (fedavg, fedprox: eta; fedavgm: eta, ' +
          'momentum; fedadagrad: eta, beta1, tau; fedadam, fedyogi: eta, beta1, beta2, tau)',
        fieldPath: '.params',
      },
      {
        rule: "!has(self.params) || self.params.all(k, k in ['eta', 'tau'] ? self.params[k] > 0.0 : (self.params[k] >= 0.0 && self.params[k] < 1.0))",
        message: 'eta and tau must be > 0; momentum, beta1 and beta2 must lie in [0, 1)',
        fieldPath: '.params',
      },
      { rule: 'self == oldSelf', message: 'is immutable once the job is created' },
    ],
  },
);

const PartitionSchema = obj(
  {
    dataset: str({
      description: 'Dataset directory to split (a train split, and a test split).',
      minLength: 1,
      maxLength: 4096,
    }),
    scheme: oneOfStrings(PARTITION_SCHEMES, {
      description: 'How to split: iid, dirichlet (label skew), classes, quantity.',
      default: 'iid',
    }),
    alpha: optional(
      num({ description: 'Dirichlet concentration: smaller is more skewed.', minimum: 1e-6 }),
    ),
    seed: int({ description: 'Seed of the split.', minimum: 0, default: 0 }),
    maxExamples: optional(int({ description: 'Training examples to use.', minimum: 1 })),
    maxTestExamples: optional(int({ description: 'Test examples to use.', minimum: 1 })),
  },
  {
    description:
      'flotilla simulate only: split one dataset into the sites. The operator ignores it; on ' +
      'a cluster every site brings its own data (spec.sites[].volume or data).',
  },
);

const EvaluationSchema = obj(
  {
    data: str({
      description:
        'Held-out dataset directory (its test split) inside the aggregator container; the ' +
        'aggregator evaluates every new global model on it.',
      minLength: 1,
      maxLength: 4096,
    }),
    maxExamples: optional(
      int({ description: 'Evaluate on at most this many held-out examples.', minimum: 1 }),
    ),
    volume: optional(
      volumeSource(
        'A volume with the held-out data, mounted read-only in the aggregator at ' +
          `${MOUNT_PATHS.evaluationData}; a relative spec.evaluation.data is a path inside it.`,
      ),
    ),
  },
  { description: 'Evaluation of the global model after every round.' },
);

const ContainerSettings = (who: string, defaultImage: string) => ({
  image: optional(
    str({
      description: `Container image of the ${who}. Default: ${defaultImage}.`,
      minLength: 1,
      maxLength: 1024,
    }),
  ),
  imagePullPolicy: optional(
    oneOfStrings(['Always', 'IfNotPresent', 'Never'] as const, {
      description: `Pull policy of the ${who} image.`,
    }),
  ),
  resources: optional(
    opaque<V1ResourceRequirements>({
      description: `CPU and memory requests and limits of the ${who} (a ResourceRequirements).`,
    }),
  ),
  env: optional(
    list(opaque<V1EnvVar>({ description: 'A Kubernetes EnvVar.' }), {
      description: `Extra environment variables of the ${who} container.`,
      maxItems: 64,
    }),
  ),
});

const TrainerSchema = obj(ContainerSettings('trainers', "the operator's trainer image"), {
  description: 'Image and resources shared by all trainer pods.',
  default: {},
});

const AggregatorSchema = obj(
  {
    ...ContainerSettings('aggregator', "the operator's own image"),
    stagingSlots: int({
      description: 'Updates the aggregator receives at once; each slot holds one model in memory.',
      minimum: 1,
      maximum: 1024,
      default: 2,
    }),
    nodeSelector: optional(
      stringMap({ description: 'Node labels the aggregator pod must match.' }),
    ),
    tolerations: optional(
      list(opaque<V1Toleration>({ description: 'A Kubernetes Toleration.' }), {
        description: 'Tolerations of the aggregator pod.',
        maxItems: 32,
      }),
    ),
    affinity: optional(opaque<V1Affinity>({ description: 'Affinity of the aggregator pod.' })),
  },
  { description: 'Image, resources and placement of the aggregator pod.', default: {} },
);

// ---------------------------------------------------------------------------------------
// spec

/** FederatedJobSpecSchema is the schema of `spec`. */
export const FederatedJobSpecSchema = obj(
  {
    model: ModelSchema,
    sites: list(SiteSchema, {
      description:
        'The sites that train. Site names are immutable: each one is bound to a certificate ' +
        'of the job.',
      minItems: 1,
      maxItems: MAX_SITES,
      listType: 'map',
      mapKeys: ['name'],
      rules: [
        {
          rule: 'self.all(s, self.exists_one(t, t.name == s.name))',
          message: 'site names must be unique',
        },
        {
          rule: 'self.map(s, s.name) == oldSelf.map(s, s.name)',
          message: 'site names are immutable: create a new FederatedJob to change the sites',
        },
      ],
    }),
    rounds: int({ description: 'Rounds to run.', minimum: 1, maximum: 100000 }),
    minSites: int({
      description:
        'Quorum: updates a round needs to close at its deadline; a round that misses it is ' +
        'retried (spec.failurePolicy).',
      minimum: 1,
      default: 1,
    }),
    sitesPerRound: optional(
      int({
        description:
          'Sites picked (seeded by spec.seed) to train in each round, between spec.minSites ' +
          'and the number of sites. Default: every site.',
        minimum: 1,
      }),
    ),
    roundTimeoutSeconds: int({
      description: 'Deadline of one round, from its start.',
      minimum: 1,
      default: 600,
    }),
    training: TrainingSchema,
    aggregation: AggregationSchema,
    stopping: obj(
      {
        targetAccuracy: optional(
          num({
            description: 'Stop as soon as the evaluated accuracy of the global model reaches this.',
            minimum: 0,
            maximum: 1,
          }),
        ),
      },
      { description: 'When to stop before spec.rounds.', default: {} },
    ),
    failurePolicy: obj(
      {
        maxRoundRetries: int({
          description:
            'How many times a round that missed its quorum is retried before the job fails.',
          minimum: 0,
          default: 2,
        }),
      },
      { description: 'What the job tolerates before it fails.', default: {} },
    ),
    evaluation: optional(EvaluationSchema),
    partition: optional(PartitionSchema),
    seed: int({
      description: 'Seed of participant selection. Immutable.',
      minimum: 0,
      default: 0,
      rules: [{ rule: 'self == oldSelf', message: 'is immutable once the job is created' }],
    }),
    output: optional(
      str({
        description:
          'Directory inside the aggregator where the final model (model.onnx) is written; ' +
          "without spec.outputVolume it is the container's own filesystem, lost with the pod.",
        minLength: 1,
        maxLength: 4096,
        pattern: '^/',
      }),
    ),
    outputVolume: optional(
      volumeSource(
        'The volume the final model is written to, mounted at spec.output in the aggregator.',
      ),
    ),
    checkpointVolume: optional(
      volumeSource(
        `The volume the aggregator checkpoints every round to (mounted at ` +
          `${MOUNT_PATHS.checkpoints}); a restarted aggregator resumes from the newest one. ` +
          'Default: an emptyDir, which dies with the pod: use a persistentVolumeClaim to ' +
          'survive the loss of the aggregator pod.',
      ),
    ),
    trainer: TrainerSchema,
    aggregator: AggregatorSchema,
    imagePullSecrets: optional(
      list(opaque<V1LocalObjectReference>({ description: 'A Secret name: {name: ...}.' }), {
        description: 'Secrets to pull the trainer and aggregator images with.',
        maxItems: 16,
      }),
    ),
    suspend: bool({
      description:
        'Suspends the job: its pods are deleted after the current round; clearing it resumes ' +
        'from the last checkpoint.',
      default: false,
    }),
    activeDeadlineSeconds: optional(
      int({
        description: 'The job fails when it has run longer than this since it started.',
        minimum: 1,
      }),
    ),
    backoffLimit: int({
      description:
        'How many times the controller replaces the trainer pod of one site before that site ' +
        'counts as failed (per site).',
      minimum: 0,
      default: 3,
    }),
    ttlSecondsAfterFinished: optional(
      int({
        description:
          'Delete the job (and what it owns) this long after it succeeded or failed. Unset: keep it.',
        minimum: 0,
      }),
    ),
  },
  {
    description: 'What to train, on which sites, and how.',
    rules: [
      {
        rule: 'self.minSites <= size(self.sites)',
        message: 'must be no more than the number of sites in spec.sites',
        fieldPath: '.minSites',
      },
      {
        rule: '!has(self.sitesPerRound) || (self.sitesPerRound >= self.minSites && self.sitesPerRound <= size(self.sites))',
        message: 'must lie between spec.minSites and the number of sites in spec.sites',
        fieldPath: '.sitesPerRound',
      },
      {
        rule: "self.aggregation.strategy != 'fedprox' || has(self.training.proximalMu)",
        message: 'is required with strategy fedprox (the proximal term is trained on the sites)',
        fieldPath: '.training.proximalMu',
        reason: 'FieldValueRequired',
      },
      {
        rule: '!has(self.outputVolume) || has(self.output)',
        message: 'outputVolume needs output: the directory it is mounted at',
        fieldPath: '.outputVolume',
      },
    ],
  },
);

/** FederatedJobSpec is `spec` as stored: the API server has filled in the defaults. */
export type FederatedJobSpec = Static<typeof FederatedJobSpecSchema>;
/** FederatedJobStatus is `status`, written by the controller. */
export type FederatedJobStatus = Static<typeof FederatedJobStatusSchema>;
/** SiteSpec is one entry of `spec.sites`. */
export type SiteSpec = FederatedJobSpec['sites'][number];

/** FederatedJob is the resource as the controller reads it from the API server. */
export interface FederatedJob {
  apiVersion: typeof API_VERSION;
  kind: typeof KIND;
  metadata: {
    name: string;
    namespace: string;
    uid: string;
    generation?: number;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    creationTimestamp?: string | Date;
    resourceVersion?: string;
  };
  spec: FederatedJobSpec;
  status?: FederatedJobStatus;
}
