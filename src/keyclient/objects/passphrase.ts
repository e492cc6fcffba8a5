import type { SecretBuffer } from '../../util/secure-memory.js';
import { makeManagedObject, type ManagedObject, type ObjectMetadata } from './managed-object.js';

/** A passphrase: its bytes as stored (UTF-8 text, usually). */
export interface Passphrase extends ManagedObject {
  readonly type: 'passphrase';
}

export function passphrase(meta: ObjectMetadata, secret: SecretBuffer | undefined): Passphrase {
  return makeManagedObject('passphrase', meta, secret) as Passphrase;
}
