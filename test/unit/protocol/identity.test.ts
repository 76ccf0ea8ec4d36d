import * as crypto from 'crypto';
import {
  createJobCertificates,
  identityUri,
  parseIdentityUri,
} from '../../../federation/protocol/identity';

describe('job identities', () => {
  test('identity URIs round-trip, and other URIs are not identities', () => {
    for (const id of [
      { kind: 'site' as const, job: 'j1', site: 'clinic-a' },
      { kind: 'aggregator' as const, job: 'j1' },
      { kind: 'coordinator' as const, job: 'j1' },
    ]) {
      expect(parseIdentityUri(identityUri(id))).toEqual(id);
    }
    expect(identityUri({ kind: 'site', job: 'j1', site: 'a' })).toBe('flotilla://j1/site/a');
    expect(parseIdentityUri('https://j1/site/a')).toBeUndefined();
    expect(parseIdentityUri('flotilla://j1/site/a/b')).toBeUndefined();
  });

  test('every certificate is signed by the job CA and names its identity in a URI SAN', async () => {
    const certs = await createJobCertificates('job-x', ['clinic-a', 'clinic-b']);
    const ca = new crypto.X509Certificate(certs.ca.cert);
    expect(ca.ca).toBe(true);
    const site = new crypto.X509Certificate(certs.sites['clinic-b'].cert);
    expect(site.verify(ca.publicKey)).toBe(true);
    expect(site.checkIssued(ca)).toBe(true);
    expect(site.ca).toBe(false);
    expect(site.subjectAltName).toBe('URI:flotilla://job-x/site/clinic-b');
    const aggregator = new crypto.X509Certificate(certs.aggregator.cert);
    expect(aggregator.subjectAltName).toContain('URI:flotilla://job-x/aggregator');
    expect(aggregator.checkHost('localhost')).toBe('localhost');
    expect(aggregator.checkIP('127.0.0.1')).toBe('127.0.0.1');
    // The private key matches the certificate.
    const key = crypto.createPrivateKey(certs.sites['clinic-b'].key);
    expect(site.checkPrivateKey(key)).toBe(true);
  });

  test('a site name that is not a DNS label is refused', async () => {
    await expect(createJobCertificates('job-x', ['Clinic_A'])).rejects.toThrow(
      'site name "Clinic_A": expected lowercase letters, digits and dashes (DNS label)',
    );
  });
});
