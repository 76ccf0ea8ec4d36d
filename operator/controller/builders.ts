import * as path from 'path';
import { stringify } from 'yaml';
import type {
  V1ConfigMap,
  V1Container,
  V1Pod,
  V1PodSpec,
  V1ResourceRequirements,
  V1Service,
  V1Volume,
  V1VolumeMount,
} from '@kubernetes/client-node';
import { FederatedJob, MOUNT_PATHS, SiteSpec } from '../api/federatedjob';
import { AGGREGATOR_PORT, LABELS, aggregatorHost, names, ownedMetadata } from './builders-names';
import { SECRET_KEYS } from './builders-secret';
import { TLS_FILES } from '../../federation/protocol/identity';

/** BuildDefaults are the operator's settings the job's spec may override. */
export interface BuildDefaults {
  /** The operator's image; the aggregator runs it (`flotilla aggregator`). */
  operatorImage: string;
  /** The trainer image (`flotilla trainer`, with CUDA). */
  trainerImage: string;
  imagePullPolicy?: 'Always' | 'IfNotPresent' | 'Never';
}

/** BuildError is a spec the controller cannot turn into pods; it names the field. */
export class BuildError extends Error {
  override readonly name = 'BuildError';
}

/** The file name of the runtime manifest in the `<job>-manifest` ConfigMap. */
export const MANIFEST_KEY = 'job.yaml';
const MANIFEST_FILE = path.posix.join(MOUNT_PATHS.job, MANIFEST_KEY);

/** The GPU resource the trainers request (NVIDIA's device plugin advertises it). */
export const GPU_RESOURCE = 'nvidia.com/gpu';

// The user the images run as (see the Dockerfiles); fsGroup lets it read the mounted
// certificates and write to checkpoint and output volumes.
const RUN_AS = 10001;

// ---------------------------------------------------------------------------------------
// Paths inside the pods

/** siteDataDir is where a site's trainer reads its dataset. */
export function siteDataDir(job: FederatedJob, index: number): string {
  const site = job.spec.sites[index];
  if (site.data !== undefined) return site.data;
  if (site.volume !== undefined) return site.mountPath;
  throw new BuildError(
    `spec.sites[${index}]: needs volume or data on a cluster, got neither ` +
      '(spec.partition only splits data for flotilla simulate)',
  );
}

function modelFile(job: FederatedJob): string | undefined {
  const m = job.spec.model;
  if (m.configMap) return path.posix.join(MOUNT_PATHS.model, m.configMap.key);
  if (m.onnx !== undefined && m.volume) return path.posix.join(MOUNT_PATHS.model, m.onnx);
  return m.onnx;
}

function evaluationDir(job: FederatedJob): string | undefined {
  const e = job.spec.evaluation;
  if (!e) return undefined;
  if (e.volume && !path.posix.isAbsolute(e.data))
    return path.posix.join(MOUNT_PATHS.evaluationData, e.data);
  return e.data;
}

// ---------------------------------------------------------------------------------------
// The runtime manifest

/**
 * runtimeManifest is the job as `flotilla aggregator` and `flotilla trainer` read it
 * (federation/job/manifest.ts): the same spec with the Kubernetes-only fields left out and
 * every path replaced by where the pods find it. Paths are written relative to the folder
 * the manifest is mounted in, which the parser resolves them against: a runtime that moves
 * the container's root (the local node agent of test/cluster/ does) still finds them.
 */
export function runtimeManifest(job: FederatedJob): Record<string, unknown> {
  const s = job.spec;
  const inPod = (p: string | undefined): string | undefined =>
    p !== undefined && path.posix.isAbsolute(p) ? path.posix.relative(MOUNT_PATHS.job, p) : p;
  const model =
    s.model.zoo !== undefined
      ? {
          zoo: s.model.zoo,
          inputShape: s.model.inputShape,
          numClasses: s.model.numClasses,
          seed: s.model.seed,
        }
      : { onnx: inPod(modelFile(job)), seed: s.model.seed };
  const evaluation = s.evaluation && {
    data: inPod(evaluationDir(job)),
    maxExamples: s.evaluation.maxExamples,
  };
  const spec = {
    model,
    sites: s.sites.map((site, i) => ({ name: site.name, data: inPod(siteDataDir(job, i)) })),
    rounds: s.rounds,
    minSites: s.minSites,
    sitesPerRound: s.sitesPerRound,
    roundTimeoutSeconds: s.roundTimeoutSeconds,
    training: s.training,
    aggregation: s.aggregation,
    stopping: s.stopping,
    failurePolicy: s.failurePolicy,
    evaluation,
    seed: s.seed,
    output: inPod(s.output),
  };
  return {
    apiVersion: job.apiVersion,
    kind: job.kind,
    metadata: { name: job.metadata.name, namespace: job.metadata.namespace },
    spec: withoutUndefined(spec),
  };
}

// YAML writes an undefined field as null, which the manifest parser rightly refuses.
function withoutUndefined<T>(value: T): T {
  return JSON.parse(JSON.stringify(value)) as T;
}

/** buildManifestConfigMap holds the runtime manifest every pod of the job mounts. */
export function buildManifestConfigMap(job: FederatedJob): V1ConfigMap {
  return {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: ownedMetadata(job, names.manifest(job), 'manifest'),
    data: { [MANIFEST_KEY]: stringify(runtimeManifest(job)) },
  };
}

// ---------------------------------------------------------------------------------------
// Volumes shared by the pods

/** Mounted is a pod volume and where the container mounts it. */
type Mounted = [V1Volume, V1VolumeMount];

/** mounted names a volume source of the spec and mounts it; nothing when there is no source. */
function mounted(
  name: string,
  source: Omit<V1Volume, 'name'> | undefined,
  mountPath: string,
  readOnly: boolean,
): Mounted | undefined {
  if (!source) return undefined;
  return [
    { ...source, name },
    { name, mountPath, ...(readOnly && { readOnly }) },
  ];
}

function manifestVolume(job: FederatedJob): Mounted {
  return [
    { name: 'job', configMap: { name: names.manifest(job) } },
    { name: 'job', mountPath: MOUNT_PATHS.job, readOnly: true },
  ];
}

/** The Secret volume of one identity: only its own key pair, under the runtime's names. */
function tlsVolume(job: FederatedJob, cert: string, key: string): Mounted {
  return [
    {
      name: 'tls',
      secret: {
        secretName: names.secret(job),
        defaultMode: 0o440,
        items: [
          { key: SECRET_KEYS.ca, path: TLS_FILES.ca },
          { key: cert, path: TLS_FILES.cert },
          { key, path: TLS_FILES.key },
        ],
      },
    },
    { name: 'tls', mountPath: MOUNT_PATHS.tls, readOnly: true },
  ];
}

function modelVolume(job: FederatedJob): Mounted | undefined {
  const m = job.spec.model;
  const source = m.configMap
    ? {
        configMap: {
          name: m.configMap.name,
          items: [{ key: m.configMap.key, path: m.configMap.key }],
        },
      }
    : m.volume;
  return mounted('model', source, MOUNT_PATHS.model, true);
}

function podSpec(
  job: FederatedJob,
  container: V1Container,
  volumes: Array<Mounted | undefined>,
): V1PodSpec {
  const present = volumes.filter((v): v is Mounted => v !== undefined);
  container.volumeMounts = present.map(([, mount]) => mount);
  container.securityContext = {
    allowPrivilegeEscalation: false,
    capabilities: { drop: ['ALL'] },
  };
  return {
    containers: [container],
    volumes: present.map(([volume]) => volume),
    // Neither the aggregator nor a trainer talks to the API server.
    automountServiceAccountToken: false,
    enableServiceLinks: false,
    securityContext: {
      runAsNonRoot: true,
      runAsUser: RUN_AS,
      runAsGroup: RUN_AS,
      fsGroup: RUN_AS,
      seccompProfile: { type: 'RuntimeDefault' },
    },
    ...(job.spec.imagePullSecrets && { imagePullSecrets: job.spec.imagePullSecrets }),
  };
}

// ---------------------------------------------------------------------------------------
// The aggregator

/**
 * buildAggregatorPod runs `flotilla aggregator` for the job: gRPC with mutual TLS on port
 * 7443, checkpoints on spec.checkpointVolume (an emptyDir by default), the final model under
 * spec.output. A crashed container restarts in place (OnFailure), which keeps an emptyDir's
 * checkpoints; the controller replaces the pod only when it is gone.
 */
export function buildAggregatorPod(job: FederatedJob, defaults: BuildDefaults): V1Pod {
  const s = job.spec;
  const a = s.aggregator;
  const args = [
    'aggregator',
    '--job',
    MANIFEST_FILE,
    // The pod's own address: where every pod shares one network namespace (the local node
    // agent), 0.0.0.0 would make two jobs' aggregators collide.
    // TODO: an IPv6 pod IP needs brackets here; IPv6-only clusters cannot run the aggregator yet.
    '--listen',
    `$(POD_IP):${AGGREGATOR_PORT}`,
    '--tls-dir',
    MOUNT_PATHS.tls,
    '--checkpoint-dir',
    MOUNT_PATHS.checkpoints,
    '--staging-slots',
    String(a.stagingSlots),
  ];
  const container: V1Container = {
    name: 'aggregator',
    image: a.image ?? defaults.operatorImage,
    imagePullPolicy: a.imagePullPolicy ?? defaults.imagePullPolicy,
    args,
    ports: [{ name: 'grpc', containerPort: AGGREGATOR_PORT, protocol: 'TCP' }],
    // A TCP probe: the port only opens once the model is built and the checkpoint restored.
    readinessProbe: {
      tcpSocket: { port: 'grpc' },
      periodSeconds: 5,
    },
    env: [
      { name: 'POD_IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } },
      ...(a.env ?? []),
    ],
    ...(a.resources && { resources: a.resources }),
  };
  const checkpoints = s.checkpointVolume ?? { emptyDir: {} };
  const spec = podSpec(job, container, [
    manifestVolume(job),
    tlsVolume(job, SECRET_KEYS.aggregatorCert, SECRET_KEYS.aggregatorKey),
    mounted('checkpoints', checkpoints, MOUNT_PATHS.checkpoints, false),
    modelVolume(job),
    mounted('evaluation', s.evaluation?.volume, MOUNT_PATHS.evaluationData, true),
    s.output ? mounted('output', s.outputVolume, s.output, false) : undefined,
  ]);
  spec.restartPolicy = 'OnFailure';
  if (a.nodeSelector) spec.nodeSelector = a.nodeSelector;
  if (a.tolerations) spec.tolerations = a.tolerations;
  if (a.affinity) spec.affinity = a.affinity;
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: ownedMetadata(job, names.aggregator(job), 'aggregator'),
    spec,
  };
}

/** buildAggregatorService gives the aggregator the stable DNS name the trainers dial. */
export function buildAggregatorService(job: FederatedJob): V1Service {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: ownedMetadata(job, names.aggregator(job), 'aggregator'),
    spec: {
      type: 'ClusterIP',
      selector: { [LABELS.job]: job.metadata.name, [LABELS.role]: 'aggregator' },
      ports: [
        {
          name: 'grpc',
          port: AGGREGATOR_PORT,
          targetPort: 'grpc',
          protocol: 'TCP',
          appProtocol: 'grpc',
        },
      ],
    },
  };
}

// ---------------------------------------------------------------------------------------
// Trainers

function trainerResources(job: FederatedJob, site: SiteSpec): V1ResourceRequirements | undefined {
  const base = site.resources ?? job.spec.trainer.resources;
  if (site.gpus === 0) return base;
  // Extended resources are asked for in limits; the request defaults to the limit.
  return { ...base, limits: { ...base?.limits, [GPU_RESOURCE]: String(site.gpus) } };
}

/**
 * buildTrainerPod runs `flotilla trainer` for the site at spec.sites[index]. `attempt`
 * counts the pods the site has had (0 for the first), so a replacement gets a new name.
 * The pod sees its own site certificate only, its data read-only, and lands on the nodes
 * the site names.
 */
export function buildTrainerPod(
  job: FederatedJob,
  index: number,
  attempt: number,
  defaults: BuildDefaults,
): V1Pod {
  const site = job.spec.sites[index];
  if (!site) {
    throw new BuildError(
      `spec.sites[${index}]: no such site, the job has ${job.spec.sites.length}`,
    );
  }
  const host = aggregatorHost(job);
  const t = job.spec.trainer;
  const resources = trainerResources(job, site);
  const container: V1Container = {
    name: 'trainer',
    image: t.image ?? defaults.trainerImage,
    imagePullPolicy: t.imagePullPolicy ?? defaults.imagePullPolicy,
    args: [
      'trainer',
      '--job',
      MANIFEST_FILE,
      '--site',
      site.name,
      '--aggregator',
      `${host}:${AGGREGATOR_PORT}`,
      '--server-name',
      host,
      '--tls-dir',
      MOUNT_PATHS.tls,
      '--data',
      siteDataDir(job, index),
      // auto: CUDA when the pod got a GPU and the runtime finds it, else CPU (logged).
      '--provider',
      'auto',
    ],
    ...(resources && { resources }),
    ...(t.env && { env: t.env }),
  };
  const spec = podSpec(job, container, [
    manifestVolume(job),
    tlsVolume(job, SECRET_KEYS.siteCert(site.name), SECRET_KEYS.siteKey(site.name)),
    mounted('data', site.volume, site.mountPath, true),
    modelVolume(job),
  ]);
  // The controller replaces a failed trainer itself and counts it against backoffLimit.
  spec.restartPolicy = 'Never';
  if (site.nodeSelector) spec.nodeSelector = site.nodeSelector;
  if (site.tolerations) spec.tolerations = site.tolerations;
  if (site.affinity) spec.affinity = site.affinity;
  const metadata = ownedMetadata(job, names.trainer(job, site.name, attempt), 'trainer', site.name);
  metadata.labels![LABELS.attempt] = String(attempt);
  return { apiVersion: 'v1', kind: 'Pod', metadata, spec };
}
