import * as fs from 'fs';
import * as path from 'path';
import { X509Certificate } from 'crypto';
import { Command } from 'commander';
import { parse } from 'yaml';
import type { V1Pod } from '@kubernetes/client-node';
import { buildCrd } from '../../../operator/api/crd';
import { FederatedJob } from '../../../operator/api/federatedjob';
import {
  BuildError,
  buildAggregatorPod,
  buildAggregatorService,
  buildManifestConfigMap,
  buildTrainerPod,
  MANIFEST_KEY,
} from '../../../operator/controller/builders';
import { boundedName, names } from '../../../operator/controller/builders-names';
import { buildJobSecret, issueJobCertificates } from '../../../operator/controller/builders-secret';
import { register as registerAggregator } from '../../../operator/cli/aggregator';
import { register as registerTrainer } from '../../../operator/cli/trainer';
import { parseManifest } from '../../../federation/job/manifest';
import { JobCertificates } from '../../../federation/protocol/identity';
import { admit } from './crd-admission';

const schema = buildCrd().spec.versions[0].schema.openAPIV3Schema;
const ROOT = path.resolve(__dirname, '..', '..', '..');
const DEFAULTS = {
  operatorImage: 'ghcr.io/flotilla/operator:0.1.0',
  trainerImage: 'ghcr.io/flotilla/trainer:0.1.0',
};

type Json = Record<string, unknown>;

/** stored turns a manifest into the job the controller reads: defaulted, with uid and namespace. */
function stored(spec: Json, name = 'fmnist'): FederatedJob {
  const manifest = {
    apiVersion: 'flotilla.dev/v1alpha1',
    kind: 'FederatedJob',
    metadata: { name },
    spec,
  };
  const { object, errors } = admit(schema, manifest);
  expect(errors).toEqual([]);
  const metadata = object.metadata as Json;
  metadata.namespace = 'research';
  metadata.uid = '6f1c1e2a-7d3b-4a51-9d55-0c8a3e1f2b44';
  return object as unknown as FederatedJob;
}

const clusterSpec = (): Json => ({
  model: { zoo: 'cnn', inputShape: [1, 28, 28], numClasses: 10, seed: 3 },
  sites: [
    {
      name: 'clinic-a',
      volume: { hostPath: { path: '/srv/clinic-a', type: 'Directory' } },
      gpus: 2,
      nodeSelector: { 'flotilla.dev/site': 'clinic-a' },
      tolerations: [{ key: 'nvidia.com/gpu', operator: 'Exists', effect: 'NoSchedule' }],
      affinity: {
        nodeAffinity: { requiredDuringSchedulingIgnoredDuringExecution: { nodeSelectorTerms: [] } },
      },
      resources: { requests: { cpu: '2', memory: '4Gi' } },
    },
    { name: 'clinic-b', data: '/mnt/fmnist', gpus: 0 },
  ],
  rounds: 10,
  minSites: 2,
  training: { optimizer: 'adam', learningRate: 0.001 },
  aggregation: { strategy: 'fedadam', params: { eta: 0.02 } },
  evaluation: { data: 'test-split', volume: { persistentVolumeClaim: { claimName: 'eval' } } },
  output: '/models',
  outputVolume: { persistentVolumeClaim: { claimName: 'models' } },
  checkpointVolume: { persistentVolumeClaim: { claimName: 'ckpt' } },
  trainer: { resources: { limits: { memory: '8Gi' } } },
  imagePullSecrets: [{ name: 'registry' }],
});

/**
 * parseCli parses a container's args with the real `flotilla` command definitions, without
 * running the command: unknown flags and missing required ones throw, as they would in the pod.
 */
function parseCli(args: string[]): { command: string; flags: Json } {
  const program = new Command().exitOverride();
  registerAggregator(program);
  registerTrainer(program);
  let seen: { command: string; flags: Json } | undefined;
  for (const cmd of program.commands) {
    cmd.exitOverride();
    cmd.action((flags: Json) => {
      seen = { command: cmd.name(), flags };
    });
  }
  program.parse(args, { from: 'user' });
  if (!seen) throw new Error(`no command ran for ${args.join(' ')}`);
  return seen;
}

function volume(pod: V1Pod, name: string) {
  return pod.spec!.volumes!.find((v) => v.name === name);
}

function mount(pod: V1Pod, name: string) {
  return pod.spec!.containers[0].volumeMounts!.find((m) => m.name === name);
}

describe('the runtime manifest', () => {
  test('is one the manifest parser of the aggregator and trainers accepts, paths rewritten', () => {
    const job = stored(clusterSpec());
    const cm = buildManifestConfigMap(job);
    const parsed = parseManifest(cm.data![MANIFEST_KEY], '/etc/flotilla/job');
    expect(parsed.metadata).toEqual({ name: 'fmnist', namespace: 'research' });
    expect(parsed.spec.sites).toEqual([
      { name: 'clinic-a', data: '/data' },
      { name: 'clinic-b', data: '/mnt/fmnist' },
    ]);
    expect(parsed.spec.evaluation).toEqual({ data: '/eval/test-split', maxExamples: undefined });
    expect(parsed.spec.aggregation).toEqual({ strategy: 'fedadam', params: { eta: 0.02 } });
    expect(parsed.spec.training.learningRate).toBe(0.001);
    expect(parsed.spec.output).toBe('/models');
    expect(parsed.spec.model).toEqual({
      zoo: 'cnn',
      inputShape: [1, 28, 28],
      numClasses: 10,
      seed: 3,
    });
  });

  test('writes in-pod paths relative to the manifest, so a moved container root still works', () => {
    const cm = buildManifestConfigMap(stored(clusterSpec()));
    const written = parse(cm.data![MANIFEST_KEY]) as { spec: { sites: Json[]; output: string } };
    expect(written.spec.sites[0].data).toBe('../../../data');
    expect(written.spec.output).toBe('../../../models');
    const moved = parseManifest(cm.data![MANIFEST_KEY], '/tmp/pod-root/etc/flotilla/job');
    expect(moved.spec.sites[0].data).toBe('/tmp/pod-root/data');
  });

  test('points at the ONNX file of a ConfigMap model where the pods mount it', () => {
    const spec = { ...clusterSpec(), model: { configMap: { name: 'models', key: 'net.onnx' } } };
    const cm = buildManifestConfigMap(stored(spec));
    const parsed = parseManifest(cm.data![MANIFEST_KEY], '/etc/flotilla/job');
    expect(parsed.spec.model).toEqual({ onnx: '/etc/flotilla/model/net.onnx', seed: 0 });
  });

  test('mounts a model volume read-only in the aggregator and every trainer', () => {
    const model = {
      onnx: 'nets/fmnist.onnx',
      volume: { persistentVolumeClaim: { claimName: 'm' } },
    };
    const job = stored({ ...clusterSpec(), model });
    const parsed = parseManifest(
      buildManifestConfigMap(job).data![MANIFEST_KEY],
      '/etc/flotilla/job',
    );
    expect(parsed.spec.model).toEqual({ onnx: '/etc/flotilla/model/nets/fmnist.onnx', seed: 0 });
    for (const pod of [buildAggregatorPod(job, DEFAULTS), buildTrainerPod(job, 1, 0, DEFAULTS)]) {
      expect(volume(pod, 'model')).toEqual({
        name: 'model',
        persistentVolumeClaim: { claimName: 'm' },
      });
      expect(mount(pod, 'model')).toEqual({
        name: 'model',
        mountPath: '/etc/flotilla/model',
        readOnly: true,
      });
    }
  });

  test('refuses a site with neither data nor volume, naming it', () => {
    const text = fs.readFileSync(path.join(ROOT, 'examples', 'fashion-mnist.yaml'), 'utf8');
    const job = stored((parse(text) as { spec: Json }).spec);
    expect(() => buildManifestConfigMap(job)).toThrow(BuildError);
    expect(() => buildManifestConfigMap(job)).toThrow('spec.sites[0]: needs volume or data');
  });
});

describe('the job Secret', () => {
  let certs: JobCertificates;
  const job = stored(clusterSpec());
  beforeAll(async () => {
    certs = await issueJobCertificates(job);
  });

  const read = (data: Record<string, string>, key: string): string =>
    Buffer.from(data[key], 'base64').toString('utf8');

  test('holds the CA, the aggregator, the coordinator and one certificate per site, no CA key', () => {
    const secret = buildJobSecret(job, certs);
    expect(Object.keys(secret.data!).sort()).toEqual([
      'aggregator.crt',
      'aggregator.key',
      'ca.crt',
      'coordinator.crt',
      'coordinator.key',
      'site-clinic-a.crt',
      'site-clinic-a.key',
      'site-clinic-b.crt',
      'site-clinic-b.key',
    ]);
    const ca = new X509Certificate(read(secret.data!, 'ca.crt'));
    const site = new X509Certificate(read(secret.data!, 'site-clinic-b.crt'));
    expect(site.verify(ca.publicKey)).toBe(true);
    expect(site.subjectAltName).toContain('URI:flotilla://fmnist/site/clinic-b');
  });

  test('the aggregator certificate is valid for the Service name the trainers dial', () => {
    const secret = buildJobSecret(job, certs);
    const cert = new X509Certificate(read(secret.data!, 'aggregator.crt'));
    expect(cert.checkHost('fmnist-aggregator.research.svc')).toBe('fmnist-aggregator.research.svc');
    expect(cert.checkHost('fmnist-aggregator.research.svc.cluster.local')).toBeDefined();
  });

  test('is owned by the job and labelled with it', () => {
    const secret = buildJobSecret(job, certs);
    expect(secret.metadata!.name).toBe('fmnist-tls');
    expect(secret.immutable).toBe(true);
    expect(secret.metadata!.ownerReferences).toEqual([
      expect.objectContaining({
        kind: 'FederatedJob',
        name: 'fmnist',
        uid: job.metadata.uid,
        controller: true,
      }),
    ]);
    expect(secret.metadata!.labels).toMatchObject({
      'flotilla.dev/job': 'fmnist',
      'flotilla.dev/role': 'credentials',
    });
  });
});

describe('a trainer pod', () => {
  const job = stored(clusterSpec());
  const pod = buildTrainerPod(job, 0, 2, DEFAULTS);
  const container = pod.spec!.containers[0];

  test('runs `flotilla trainer` with flags the CLI accepts, for its site, through the Service', () => {
    const { command, flags } = parseCli(container.args!);
    expect(command).toBe('trainer');
    expect(flags).toMatchObject({
      job: '/etc/flotilla/job/job.yaml',
      site: 'clinic-a',
      aggregator: 'fmnist-aggregator.research.svc:7443',
      serverName: 'fmnist-aggregator.research.svc',
      tlsDir: '/etc/flotilla/tls',
      data: '/data',
    });
    expect(container.image).toBe(DEFAULTS.trainerImage);
  });

  test('requests the site GPUs and keeps the site resources', () => {
    expect(container.resources).toEqual({
      requests: { cpu: '2', memory: '4Gi' },
      limits: { 'nvidia.com/gpu': '2' },
    });
    const cpuOnly = buildTrainerPod(job, 1, 0, DEFAULTS).spec!.containers[0];
    expect(cpuOnly.resources).toEqual({ limits: { memory: '8Gi' } });
  });

  test('lands where the site says', () => {
    const site = clusterSpec().sites as Json[];
    expect(pod.spec!.nodeSelector).toEqual(site[0].nodeSelector);
    expect(pod.spec!.tolerations).toEqual(site[0].tolerations);
    expect(pod.spec!.affinity).toEqual(site[0].affinity);
  });

  test('mounts the site data read-only and only its own certificate', () => {
    expect(volume(pod, 'data')).toEqual({
      name: 'data',
      hostPath: { path: '/srv/clinic-a', type: 'Directory' },
    });
    expect(mount(pod, 'data')).toEqual({ name: 'data', mountPath: '/data', readOnly: true });
    expect(volume(pod, 'tls')!.secret!.items).toEqual([
      { key: 'ca.crt', path: 'ca.crt' },
      { key: 'site-clinic-a.crt', path: 'tls.crt' },
      { key: 'site-clinic-a.key', path: 'tls.key' },
    ]);
  });

  test('is owned by the job, labelled with job, role and site, and named per attempt', () => {
    expect(pod.metadata!.name).toBe('fmnist-clinic-a-2');
    expect(pod.metadata!.labels).toMatchObject({
      'flotilla.dev/job': 'fmnist',
      'flotilla.dev/role': 'trainer',
      'flotilla.dev/site': 'clinic-a',
      'flotilla.dev/attempt': '2',
    });
    expect(pod.metadata!.ownerReferences![0]).toMatchObject({ name: 'fmnist', controller: true });
  });

  test('runs as non-root without an API token, and is not restarted in place', () => {
    expect(pod.spec!.securityContext).toMatchObject({ runAsNonRoot: true });
    expect(pod.spec!.automountServiceAccountToken).toBe(false);
    expect(pod.spec!.restartPolicy).toBe('Never');
    expect(pod.spec!.imagePullSecrets).toEqual([{ name: 'registry' }]);
  });
});

describe('the aggregator', () => {
  const job = stored(clusterSpec());
  const pod = buildAggregatorPod(job, DEFAULTS);
  const service = buildAggregatorService(job);

  test('runs `flotilla aggregator` with flags the CLI accepts', () => {
    const { command, flags } = parseCli(pod.spec!.containers[0].args!);
    expect(command).toBe('aggregator');
    expect(flags).toMatchObject({
      job: '/etc/flotilla/job/job.yaml',
      listen: '$(POD_IP):7443',
      tlsDir: '/etc/flotilla/tls',
      checkpointDir: '/var/lib/flotilla/checkpoints',
      stagingSlots: '2',
    });
    expect(pod.spec!.containers[0].image).toBe(DEFAULTS.operatorImage);
  });

  test('listens on its pod IP, which Kubernetes puts in POD_IP', () => {
    expect(pod.spec!.containers[0].env).toContainEqual({
      name: 'POD_IP',
      valueFrom: { fieldRef: { fieldPath: 'status.podIP' } },
    });
  });

  test('mounts its own certificate, checkpoints, evaluation data and the output volume', () => {
    expect(volume(pod, 'tls')!.secret!.items!.map((i) => i.key)).toEqual([
      'ca.crt',
      'aggregator.crt',
      'aggregator.key',
    ]);
    expect(volume(pod, 'checkpoints')).toEqual({
      name: 'checkpoints',
      persistentVolumeClaim: { claimName: 'ckpt' },
    });
    expect(mount(pod, 'evaluation')).toEqual({
      name: 'evaluation',
      mountPath: '/eval',
      readOnly: true,
    });
    expect(mount(pod, 'output')).toEqual({ name: 'output', mountPath: '/models' });
    const plain = buildAggregatorPod(
      stored({ ...clusterSpec(), checkpointVolume: undefined }),
      DEFAULTS,
    );
    expect(volume(plain, 'checkpoints')).toEqual({ name: 'checkpoints', emptyDir: {} });
  });

  test('the Service selects the aggregator pod on the gRPC port 7443', () => {
    expect(service.metadata!.name).toBe(pod.metadata!.name);
    for (const [k, v] of Object.entries(service.spec!.selector!)) {
      expect(pod.metadata!.labels![k]).toBe(v);
    }
    expect(service.spec!.ports).toEqual([
      expect.objectContaining({ port: 7443, targetPort: 'grpc' }),
    ]);
    expect(pod.spec!.containers[0].ports).toEqual([
      expect.objectContaining({ name: 'grpc', containerPort: 7443 }),
    ]);
    expect(pod.spec!.restartPolicy).toBe('OnFailure');
  });
});

describe('names', () => {
  test('stay DNS labels when job and site names are long, and differ per site', () => {
    const job = stored(
      {
        ...clusterSpec(),
        sites: [
          { name: `${'s'.repeat(55)}-one`, data: '/d' },
          { name: `${'s'.repeat(55)}-two`, data: '/d' },
        ],
      },
      'j'.repeat(63),
    );
    const a = buildTrainerPod(job, 0, 0, DEFAULTS).metadata!.name!;
    const b = buildTrainerPod(job, 1, 0, DEFAULTS).metadata!.name!;
    for (const n of [a, b, names.aggregator(job), names.secret(job), names.manifest(job)]) {
      expect(n).toMatch(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/);
    }
    expect(a).not.toBe(b);
    expect(buildTrainerPod(job, 0, 0, DEFAULTS).metadata!.name).toBe(a);
  });

  test('a short name is kept as it is', () => {
    expect(boundedName('fmnist', 'clinic-a', '0')).toBe('fmnist-clinic-a-0');
  });

  test('the Service name starts with a letter even when the job name does not', () => {
    const job = stored(clusterSpec(), '2026-run');
    expect(buildAggregatorService(job).metadata!.name).toMatch(/^[a-z]/);
  });
});
