import type { V1Secret } from '@kubernetes/client-node';
import {
  createJobCertificates,
  JobCertificates,
  TLS_FILES,
} from '../../federation/protocol/identity';
import { FederatedJob } from '../api/federatedjob';
import { aggregatorHosts, names, ownedMetadata } from './builders-names';

/**
 * The keys of the job's Secret. Each pod mounts only its own pair, renamed to the
 * ca.crt / tls.crt / tls.key files the runtime reads (federation/protocol/identity.ts).
 * The CA's private key is not kept: the sites are fixed for the life of a job, so nothing
 * needs signing later, and a key that is not stored cannot leak.
 */
export const SECRET_KEYS = {
  ca: TLS_FILES.ca,
  aggregatorCert: 'aggregator.crt',
  aggregatorKey: 'aggregator.key',
  coordinatorCert: 'coordinator.crt',
  coordinatorKey: 'coordinator.key',
  siteCert: (site: string): string => `site-${site}.crt`,
  siteKey: (site: string): string => `site-${site}.key`,
} as const;

/**
 * issueJobCertificates makes the job's CA and the certificates of its aggregator (valid for
 * the aggregator Service's DNS names), its coordinator (the controller) and every site.
 */
export function issueJobCertificates(
  job: FederatedJob,
  clusterDomain?: string,
): Promise<JobCertificates> {
  return createJobCertificates(
    job.metadata.name,
    job.spec.sites.map((s) => s.name),
    aggregatorHosts(job, clusterDomain),
  );
}

const base64 = (text: string): string => Buffer.from(text, 'utf8').toString('base64');

/** buildJobSecret puts the job's certificates in its Secret (`<job>-tls`). */
export function buildJobSecret(job: FederatedJob, certs: JobCertificates): V1Secret {
  const data: Record<string, string> = {
    [SECRET_KEYS.ca]: base64(certs.ca.cert),
    [SECRET_KEYS.aggregatorCert]: base64(certs.aggregator.cert),
    [SECRET_KEYS.aggregatorKey]: base64(certs.aggregator.key),
    [SECRET_KEYS.coordinatorCert]: base64(certs.coordinator.cert),
    [SECRET_KEYS.coordinatorKey]: base64(certs.coordinator.key),
  };
  for (const site of job.spec.sites) {
    const pair = certs.sites[site.name];
    if (!pair) throw new Error(`certificates: none for site "${site.name}" of spec.sites`);
    data[SECRET_KEYS.siteCert(site.name)] = base64(pair.cert);
    data[SECRET_KEYS.siteKey(site.name)] = base64(pair.key);
  }
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: ownedMetadata(job, names.secret(job), 'credentials'),
    type: 'Opaque',
    // The certificates live as long as the job; nothing may swap them under a running pod.
    immutable: true,
    data,
  };
}
