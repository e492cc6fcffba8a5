import type { SecretBuffer } from '../../util/secure-memory.js';
import { makeManagedObject, type ManagedObject, type ObjectMetadata } from './managed-object.js';

/** A private key: DER (PKCS#8) bytes; algorithm and bitLength set. */
export interface PrivateKey extends ManagedObject {
  readonly type: 'private';
}

export function privateKey(meta: ObjectMetadata, secret: SecretBuffer | undefined): PrivateKey {
  return makeManagedObject('private', meta, secret) as PrivateKey;
}
