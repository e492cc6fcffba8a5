import type { SecretBuffer } from '../../util/secure-memory.js';
import { makeManagedObject, type ManagedObject, type ObjectMetadata, type ObjectType } from './managed-object.js';

export * from './managed-object.js';
export * from './symmetric-key.js';
export * from './passphrase.js';
export * from './opaque-data.js';
export * from './private-key.js';
export * from './public-key.js';
export * from './x509-certificate.js';

/** Builds the managed object of `type`; for backends that learn the type at run time. */
export function objectOfType(type: ObjectType, meta: ObjectMetadata, secret: SecretBuffer | undefined): ManagedObject {
  return makeManagedObject(type, meta, secret);
}
