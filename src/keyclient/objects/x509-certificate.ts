import type { SecretBuffer } from '../../util/secure-memory.js';
import { makeManagedObject, type ManagedObject, type ObjectMetadata } from './managed-object.js';

/** An X.509 certificate: DER bytes. */
export interface X509Certificate extends ManagedObject {
  readonly type: 'certificate';
}

export function x509Certificate(meta: ObjectMetadata, secret: SecretBuffer | undefined): X509Certificate {
  return makeManagedObject('certificate', meta, secret) as X509Certificate;
}
