// @peculiar/x509 resolves its ASN.1 schemas through tsyringe, which needs the Reflect
// metadata polyfill loaded before it.
import 'reflect-metadata';
import * as fs from 'fs';
import * as path from 'path';
import { webcrypto } from 'crypto';
import * as grpc from '@grpc/grpc-js';
import * as x509 from '@peculiar/x509';
import type { AuthContext } from '@grpc/grpc-js/build/src/auth-context';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

/** The names of the files in a TLS directory, as a Kubernetes TLS Secret mounts them. */
export const TLS_FILES = { ca: 'ca.crt', cert: 'tls.crt', key: 'tls.key' } as const;

/** Identity is who a certificate speaks for within one job. */
export type Identity =
  | { kind: 'site'; job: string; site: string }
  | { kind: 'aggregator'; job: string }
  | { kind: 'coordinator'; job: string };

const SITE_NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/** identityUri is the URI SAN that names an identity: `flotilla://<job>/site/<name>`, ... */
export function identityUri(id: Identity): string {
  if (id.kind === 'site') return `flotilla://${id.job}/site/${id.site}`;
  return `flotilla://${id.job}/${id.kind}`;
}

/** parseIdentityUri reads a URI SAN back; it returns undefined for anything else. */
export function parseIdentityUri(uri: string): Identity | undefined {
  const m = /^flotilla:\/\/([^/]+)\/(site\/([^/]+)|aggregator|coordinator)$/.exec(uri);
  if (!m) return undefined;
  if (m[3] !== undefined) return { kind: 'site', job: m[1], site: m[3] };
  return { kind: m[2] as 'aggregator' | 'coordinator', job: m[1] };
}

/** PemPair is a certificate and its private key, both PEM. */
export interface PemPair {
  cert: string;
  key: string;
}

/** JobCertificates are everything a job needs to run with mutual TLS. */
export interface JobCertificates {
  ca: PemPair;
  aggregator: PemPair;
  coordinator: PemPair;
  sites: Record<string, PemPair>;
}

const KEY_ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
const VALIDITY_MS = 30 * 24 * 3600 * 1000;

async function newKeys(): Promise<webcrypto.CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey(KEY_ALGORITHM, true, [
    'sign',
    'verify',
  ])) as webcrypto.CryptoKeyPair;
}

async function keyPem(key: webcrypto.CryptoKey): Promise<string> {
  const der = await webcrypto.subtle.exportKey('pkcs8', key);
  return x509.PemConverter.encode(der, 'PRIVATE KEY');
}

function serial(): string {
  // Positive 128-bit serial: clear the top bit so DER does not read it as negative.
  const bytes = webcrypto.getRandomValues(new Uint8Array(16));
  bytes[0] &= 0x7f;
  return Buffer.from(bytes).toString('hex');
}

/**
 * createJobCertificates makes a fresh CA for one job and signs a certificate for the
 * aggregator (server and client use, valid for `aggregatorHosts`), the coordinator and
 * every site. Keys are ECDSA P-256; each certificate names its identity in a URI SAN.
 */
export async function createJobCertificates(
  job: string,
  sites: readonly string[],
  aggregatorHosts: readonly string[] = ['localhost', '127.0.0.1'],
): Promise<JobCertificates> {
  for (const site of sites) {
    if (!SITE_NAME.test(site)) {
      throw new Error(
        `site name "${site}": expected lowercase letters, digits and dashes (DNS label)`,
      );
    }
  }
  const notBefore = new Date(Date.now() - 60_000);
  const notAfter = new Date(Date.now() + VALIDITY_MS);
  const caKeys = await newKeys();
  const caCert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: `CN=flotilla job ${job} CA`,
    notBefore,
    notAfter,
    keys: caKeys,
    signingAlgorithm: KEY_ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign,
        true,
      ),
      await x509.SubjectKeyIdentifierExtension.create(caKeys.publicKey),
    ],
  });

  const issue = async (id: Identity, cn: string, hosts: readonly string[]): Promise<PemPair> => {
    const keys = await newKeys();
    const names: x509.JsonGeneralName[] = [{ type: 'url', value: identityUri(id) }];
    for (const h of hosts) {
      names.push(/^[0-9.]+$|:/.test(h) ? { type: 'ip', value: h } : { type: 'dns', value: h });
    }
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: serial(),
      subject: `CN=${cn}`,
      issuer: caCert.subject,
      notBefore,
      notAfter,
      signingKey: caKeys.privateKey,
      publicKey: keys.publicKey,
      signingAlgorithm: KEY_ALGORITHM,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([
          x509.ExtendedKeyUsage.serverAuth,
          x509.ExtendedKeyUsage.clientAuth,
        ]),
        new x509.SubjectAlternativeNameExtension(names),
        await x509.AuthorityKeyIdentifierExtension.create(caCert),
      ],
    });
    return { cert: cert.toString('pem'), key: await keyPem(keys.privateKey) };
  };

  const siteCerts: Record<string, PemPair> = {};
  for (const site of sites) {
    siteCerts[site] = await issue({ kind: 'site', job, site }, `${job}/site/${site}`, []);
  }
  return {
    ca: { cert: caCert.toString('pem'), key: await keyPem(caKeys.privateKey) },
    aggregator: await issue({ kind: 'aggregator', job }, `${job}/aggregator`, aggregatorHosts),
    coordinator: await issue({ kind: 'coordinator', job }, `${job}/coordinator`, []),
    sites: siteCerts,
  };
}

/**
 * writeTlsDir writes one identity's files (ca.crt, tls.crt, tls.key) the way a Kubernetes
 * TLS Secret is mounted; the key is readable by its owner only.
 */
export function writeTlsDir(dir: string, caCert: string, pair: PemPair): void {
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, TLS_FILES.ca), caCert);
  fs.writeFileSync(path.join(dir, TLS_FILES.cert), pair.cert);
  fs.writeFileSync(path.join(dir, TLS_FILES.key), pair.key, { mode: 0o600 });
}

/** TlsFiles are the contents of a TLS directory. */
export interface TlsFiles {
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
}

/** readTlsDir reads a TLS directory, naming the missing file when one is. */
export function readTlsDir(dir: string): TlsFiles {
  const read = (name: string): Buffer => {
    const file = path.join(dir, name);
    try {
      return fs.readFileSync(file);
    } catch (err) {
      throw new Error(`TLS file ${file}: ${(err as Error).message}`);
    }
  };
  return { ca: read(TLS_FILES.ca), cert: read(TLS_FILES.cert), key: read(TLS_FILES.key) };
}

/**
 * serverCredentials demand a client certificate signed by the job's CA: a peer without one
 * fails the TLS handshake and never reaches a handler.
 */
export function serverCredentials(tls: TlsFiles): grpc.ServerCredentials {
  return grpc.ServerCredentials.createSsl(
    tls.ca,
    [{ cert_chain: tls.cert, private_key: tls.key }],
    true,
  );
}

/** clientCredentials present this identity's certificate and trust only the job's CA. */
export function clientCredentials(tls: TlsFiles): grpc.ChannelCredentials {
  return grpc.credentials.createSsl(tls.ca, tls.key, tls.cert);
}

/**
 * peerIdentity reads who is calling from the verified client certificate of the call's TLS
 * session. It returns undefined when the call has no certificate or the certificate names no
 * Flotilla identity.
 */
export function peerIdentity(call: { getAuthContext(): AuthContext | null }): Identity | undefined {
  const cert = call.getAuthContext()?.sslPeerCertificate;
  const san = cert?.subjectaltname;
  if (!san) return undefined;
  for (const entry of san.split(/,\s*/)) {
    if (!entry.startsWith('URI:')) continue;
    const id = parseIdentityUri(entry.slice(4));
    if (id) return id;
  }
  return undefined;
}

/** The metadata key that names the site on an insecure development connection. */
export const DEV_SITE_METADATA = 'x-flotilla-dev-site';
