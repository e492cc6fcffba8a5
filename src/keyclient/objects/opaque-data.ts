import type { SecretBuffer } from '../../util/secure-memory.js';
import { makeManagedObject, type ManagedObject, type ObjectMetadata } from './managed-object.js';

/** Opaque data: bytes the key manager stores without interpreting. */
export interface OpaqueData extends ManagedObject {
  readonly type: 'opaque';
}

export function opaqueData(meta: ObjectMetadata, secret: SecretBuffer | undefined): OpaqueData {
  return makeManagedObject('opaque', meta, secret) as OpaqueData;
}
