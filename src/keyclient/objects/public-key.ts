import type { SecretBuffer } from '../../util/secure-memory.js';
import { makeManagedObject, type ManagedObject, type ObjectMetadata } from './managed-object.js';

/** A public key: DER (SubjectPublicKeyInfo) bytes; algorithm and bitLength set. */
export interface PublicKey extends ManagedObject {
  readonly type: 'public';
}

export function publicKey(meta: ObjectMetadata, secret: SecretBuffer | undefined): PublicKey {
  return makeManagedObject('public', meta, secret) as PublicKey;
}
