import { keyError } from '../errors.js';
import type { SecretBuffer } from '../../util/secure-memory.js';

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

/**
 * Secrets of live objects, for the shared `zeroized` getter. A getter made of
 * a fresh closure in each object literal gave every object its own hidden
 * class: about 5 µs and half a kilobyte per object, on every cache hit
 * (bench/key-cache.ts). A WeakMap keeps the secret out of reach of spread
 * and reflection, as the closures do.
 */
const secretOf = new WeakMap<object, SecretBuffer>();

const managedObjectPrototype = Object.freeze({
  get zeroized(): boolean {
    return secretOf.get(this)?.wiped ?? false;
  },
});

export function makeManagedObject(
  type: ObjectType,
  meta: ObjectMetadata,
  secret: SecretBuffer | undefined,
): ManagedObject {
  // Same properties in the same order every time, so that objects share hidden classes.
  const obj = Object.create(managedObjectPrototype) as { -readonly [K in keyof ManagedObject]: ManagedObject[K] };
  if (meta.id !== undefined) obj.id = meta.id;
  if (meta.name !== undefined) obj.name = meta.name;
  if (meta.created !== undefined) obj.created = meta.created;
  if (meta.algorithm !== undefined) obj.algorithm = meta.algorithm.toLowerCase();
  if (meta.bitLength !== undefined) obj.bitLength = meta.bitLength;
  obj.type = type;
  obj.metadataOnly = secret === undefined;
  obj.bytes = (): Buffer => {
    if (secret === undefined) {
      throw keyError('E_METADATA_ONLY', `${describe(type, meta.id)} was fetched metadata-only; fetch it again with its payload`);
    }
    return secret.view();
  };
  obj.zeroize = (): void => {
    secret?.wipe();
  };
  if (secret !== undefined) secretOf.set(obj, secret);
  return Object.freeze(obj);
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
