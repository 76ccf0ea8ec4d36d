import { createHash } from 'crypto';
import type { V1ObjectMeta, V1OwnerReference } from '@kubernetes/client-node';
import { API_VERSION, FederatedJob, KIND } from '../api/federatedjob';

/** The labels every object a FederatedJob owns carries; selectors and `kubectl -l` use them. */
export const LABELS = {
  job: 'flotilla.dev/job',
  role: 'flotilla.dev/role',
  site: 'flotilla.dev/site',
  attempt: 'flotilla.dev/attempt',
} as const;

/** Role is what an owned object does for its job. */
export type Role = 'aggregator' | 'trainer' | 'credentials' | 'manifest';

/** The gRPC port of the aggregator, in its pod and on its Service. */
export const AGGREGATOR_PORT = 7443;

const MAX_NAME = 63;

/**
 * boundedName joins `parts` with dashes into a DNS label. A name longer than 63 characters
 * is cut and ends in 8 hex digits of the full name's SHA-256, so two long names that share a
 * prefix still differ, and the same parts always give the same name.
 */
export function boundedName(...parts: string[]): string {
  const full = parts.join('-');
  if (full.length <= MAX_NAME) return full;
  const hash = createHash('sha256').update(full).digest('hex').slice(0, 8);
  const head = full.slice(0, MAX_NAME - hash.length - 1).replace(/-+$/, '');
  return `${head}-${hash}`;
}

/**
 * serviceSafe makes a name a DNS-1035 label, which a Service name must be: it must start
 * with a letter, so a job named "2026-run" gets Services named "fj-2026-run-...".
 */
function serviceSafe(name: string): string {
  return /^[a-z]/.test(name) ? name : boundedName('fj', name);
}

/** Names of the objects a job owns; each is a DNS label, derived only from job and site. */
export const names = {
  secret: (job: FederatedJob): string => boundedName(job.metadata.name, 'tls'),
  manifest: (job: FederatedJob): string => boundedName(job.metadata.name, 'manifest'),
  aggregator: (job: FederatedJob): string =>
    serviceSafe(boundedName(job.metadata.name, 'aggregator')),
  trainer: (job: FederatedJob, site: string, attempt: number): string =>
    boundedName(job.metadata.name, site, String(attempt)),
};

/** aggregatorHost is the DNS name trainers dial and the aggregator's certificate is valid for. */
export function aggregatorHost(job: FederatedJob): string {
  return `${names.aggregator(job)}.${job.metadata.namespace}.svc`;
}

/** aggregatorHosts are every name the aggregator is reached by within the cluster. */
export function aggregatorHosts(job: FederatedJob, clusterDomain = 'cluster.local'): string[] {
  const svc = names.aggregator(job);
  const ns = job.metadata.namespace;
  return [svc, `${svc}.${ns}`, `${svc}.${ns}.svc`, `${svc}.${ns}.svc.${clusterDomain}`];
}

/** labelsFor are the labels of an object with `role` in `job` (and for `site`, if given). */
export function labelsFor(job: FederatedJob, role: Role, site?: string): Record<string, string> {
  const labels: Record<string, string> = {
    'app.kubernetes.io/name': 'flotilla',
    'app.kubernetes.io/component': role,
    'app.kubernetes.io/managed-by': 'flotilla-operator',
    [LABELS.job]: job.metadata.name,
    [LABELS.role]: role,
  };
  if (site !== undefined) labels[LABELS.site] = site;
  return labels;
}

/**
 * ownerReference makes the job the controlling owner: deleting the job deletes what it owns,
 * and the controller's watches map an owned object back to its job.
 */
export function ownerReference(job: FederatedJob): V1OwnerReference {
  return {
    apiVersion: API_VERSION,
    kind: KIND,
    name: job.metadata.name,
    uid: job.metadata.uid,
    controller: true,
    blockOwnerDeletion: true,
  };
}

/** ownedMetadata is the metadata of an object the job owns. */
export function ownedMetadata(
  job: FederatedJob,
  name: string,
  role: Role,
  site?: string,
): V1ObjectMeta {
  return {
    name,
    namespace: job.metadata.namespace,
    labels: labelsFor(job, role, site),
    ownerReferences: [ownerReference(job)],
  };
}
