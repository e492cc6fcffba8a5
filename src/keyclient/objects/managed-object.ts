import { keyError } from '../errors.js';
import type { SecretBuffer } from '../secure-memory.js';

/** Object types, named as Barbican names its secret types. */
export const objectTypes = ['symmetric', 'passphrase', 'opaque', 'private', 'public', 'certificate'] as const;
export type ObjectType = (typeof objectTypes)[number];

export interface ObjectMetadata {
  /** Assigned by the key manager on store/create; absent on a fresh object. */
  id?: string;
  name?: string;
  created?: Date;
  /** Lower-case algorithm name ("aes", "rsa"); absent for passphrases, opaque data and certificates. */
  algorithm?: string;
  bitLength?: number;
}

/**
 * What Castellan calls a managed object: metadata plus, unless fetched
 * metadata-only, the secret bytes in a SecretBuffer.
 */
export interface ManagedObject extends Readonly<ObjectMetadata> {
  readonly type: ObjectType;
  readonly metadataOnly: boolean;
  /** The bytes, without copying. Throws E_METADATA_ONLY or E_OBJECT_WIPED. */
  bytes(): Buffer;
  /** Zeroes the bytes; idempotent; the object stays usable as metadata. */
  zeroize(): void;
  readonly zeroized: boolean;
}

export function makeManagedObject(
  type: ObjectType,
  meta: ObjectMetadata,
  secret: SecretBuffer | undefined,
): ManagedObject {
  const frozenMeta: ObjectMetadata = {};
  if (meta.id !== undefined) frozenMeta.id = meta.id;
  if (meta.name !== undefined) frozenMeta.name = meta.name;
  if (meta.created !== undefined) frozenMeta.created = meta.created;
  if (meta.algorithm !== undefined) frozenMeta.algorithm = meta.algorithm.toLowerCase();
  if (meta.bitLength !== undefined) frozenMeta.bitLength = meta.bitLength;
  return Object.freeze({
    ...frozenMeta,
    type,
    metadataOnly: secret === undefined,
    bytes(): Buffer {
      if (secret === undefined) {
        throw keyError('E_METADATA_ONLY', `${describe(type, meta.id)} was fetched metadata-only; fetch it again with its payload`);
      }
      return secret.view();
    },
    zeroize(): void {
      secret?.wipe();
    },
    get zeroized(): boolean {
      return secret?.wiped ?? false;
    },
  });
}

export function describe(type: ObjectType, id: string | undefined): string {
  return id === undefined ? `${type} object` : `${type} object ${id}`;
}

/** Same object with a new id (after a store assigned one); shares the secret buffer. */
export function withId(obj: ManagedObject, id: string, secret: SecretBuffer | undefined): ManagedObject {
  return makeManagedObject(obj.type, { ...metadataOf(obj), id }, secret);
}

export function metadataOf(obj: ManagedObject): ObjectMetadata {
  const meta: ObjectMetadata = {};
  if (obj.id !== undefined) meta.id = obj.id;
  if (obj.name !== undefined) meta.name = obj.name;
  if (obj.created !== undefined) meta.created = obj.created;
  if (obj.algorithm !== undefined) meta.algorithm = obj.algorithm;
  if (obj.bitLength !== undefined) meta.bitLength = obj.bitLength;
  return meta;
}
