import type { SecretBuffer } from '../../util/secure-memory.js';
import { makeManagedObject, type ManagedObject, type ObjectMetadata } from './managed-object.js';

/** A symmetric key (AES, ...): raw key bytes; algorithm and bitLength set. */
export interface SymmetricKey extends ManagedObject {
  readonly type: 'symmetric';
}

export function symmetricKey(meta: ObjectMetadata, secret: SecretBuffer | undefined): SymmetricKey {
  return makeManagedObject('symmetric', meta, secret) as SymmetricKey;
}
