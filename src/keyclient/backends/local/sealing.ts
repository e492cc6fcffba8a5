import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import type { SecretBuffer, SecureAllocator } from '../../../util/secure-memory.js';

/**
 * Sealing of local keystore records: AES-256-GCM under the key-encryption key
 * (KEK), with everything that gives a record its meaning as associated data.
 */

export const KEK_BYTES = 32;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
/** Length marker of an absent field; no real field is 4 GiB long, so it cannot collide with one. */
const ABSENT = 0xffffffff;

export interface Sealed {
  /** 96 random bits per seal: with at most millions of records under one KEK, collisions are out of reach. */
  nonce: Buffer;
  /** Ciphertext followed by the 16-byte GCM tag. */
  sealed: Buffer;
}

export type AdField = string | number | undefined;

/**
 * Associated data: each field length-prefixed (absent ones marked as such),
 * so no two different field lists encode to the same bytes. Changing any
 * field (moving a row to another id or project, editing its name) makes
 * authentication fail.
 */
export function associatedData(fields: readonly AdField[]): Buffer {
  const parts: Buffer[] = [];
  for (const field of fields) {
    const length = Buffer.alloc(4);
    if (field === undefined) {
      length.writeUInt32BE(ABSENT);
      parts.push(length);
      continue;
    }
    const bytes = Buffer.from(String(field), 'utf8');
    length.writeUInt32BE(bytes.length);
    parts.push(length, bytes);
  }
  return Buffer.concat(parts);
}

/** Seals `plaintext`; the caller still owns (and wipes) `plaintext`. */
export function seal(kek: SecretBuffer, plaintext: Uint8Array, ad: Buffer): Sealed {
  const nonce = randomBytes(NONCE_BYTES);
  const cipher = createCipheriv('aes-256-gcm', kek.view(), nonce, { authTagLength: TAG_BYTES });
  cipher.setAAD(ad);
  const sealed = Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]);
  return { nonce, sealed };
}

/**
 * Opens a sealed record straight into a SecretBuffer from `allocator`;
 * undefined when authentication fails. The decipher's own output buffers are
 * zeroed before returning, whatever the outcome.
 */
export function unseal(kek: SecretBuffer, record: Sealed, ad: Buffer, allocator: SecureAllocator): SecretBuffer | undefined {
  if (record.nonce.length !== NONCE_BYTES || record.sealed.length < TAG_BYTES) return undefined;
  const body = record.sealed.subarray(0, record.sealed.length - TAG_BYTES);
  const tag = record.sealed.subarray(record.sealed.length - TAG_BYTES);
  const decipher = createDecipheriv('aes-256-gcm', kek.view(), record.nonce, { authTagLength: TAG_BYTES });
  decipher.setAAD(ad);
  decipher.setAuthTag(tag);
  const head = decipher.update(body);
  let tail: Buffer | undefined;
  try {
    tail = decipher.final();
  } catch {
    head.fill(0); // unauthenticated plaintext must not linger either
    return undefined;
  }
  try {
    const secret = allocator.alloc(head.length + tail.length);
    secret.view().set(head, 0);
    secret.view().set(tail, head.length);
    return secret;
  } finally {
    head.fill(0);
    tail.fill(0);
  }
}
