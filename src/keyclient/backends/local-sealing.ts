import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, lstatSync, mkdirSync, openSync, readFileSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { keyError } from '../errors.js';
import { adoptSecret, type SecretBuffer, type SecureAllocator } from '../secure-memory.js';

/** Sealing of local keystore records and loading of the key-encryption key (KEK). */

export const KEK_BYTES = 32;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;

export interface Sealed {
  nonce: Buffer;
  /** Ciphertext followed by the 16-byte GCM tag. */
  sealed: Buffer;
}

/**
 * Associated data: every field that gives a record its meaning, each length-prefixed
 * so no two different field lists encode the same bytes. Changing any of them
 * (moving a row to another id or project, editing its name) fails authentication.
 */
export function associatedData(fields: readonly (string | number | undefined)[]): Buffer {
  const parts: Buffer[] = [];
  for (const field of fields) {
    const bytes = Buffer.from(field === undefined ? '\u0000absent' : String(field), 'utf8');
    const length = Buffer.alloc(4);
    length.writeUInt32BE(bytes.length);
    parts.push(length, bytes);
  }
  return Buffer.concat(parts);
}

export function seal(kek: SecretBuffer, plaintext: Buffer, ad: Buffer): Sealed {
  const nonce = randomBytes(NONCE_BYTES);
  const cipher = createCipheriv('aes-256-gcm', kek.view(), nonce);
  cipher.setAAD(ad);
  const body = Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]);
  return { nonce, sealed: body };
}

/** Opens a sealed record into secure memory; undefined when authentication fails. */
export function unseal(kek: SecretBuffer, record: Sealed, ad: Buffer, allocator: SecureAllocator): SecretBuffer | undefined {
  if (record.nonce.length !== NONCE_BYTES || record.sealed.length < TAG_BYTES) return undefined;
  const body = record.sealed.subarray(0, record.sealed.length - TAG_BYTES);
  const tag = record.sealed.subarray(record.sealed.length - TAG_BYTES);
  const decipher = createDecipheriv('aes-256-gcm', kek.view(), record.nonce);
  decipher.setAAD(ad);
  decipher.setAuthTag(tag);
  const head = decipher.update(body);
  try {
    const tail = decipher.final();
    const plain = tail.length === 0 ? head : Buffer.concat([head, tail]);
    if (plain !== head) head.fill(0);
    return adoptSecret(allocator, plain);
  } catch {
    head.fill(0); // unauthenticated plaintext must not linger either
    return undefined;
  }
}

export interface KekSource {
  kekFile: string;
  kekCredential?: string;
  createKek: boolean;
}

/**
 * Reads the KEK from a systemd credential or a root-only file, creating the
 * file on first run. A KEK readable by anyone but its owner is refused: it
 * would let them read every key in the keystore.
 */
export function loadKek(source: KekSource, allocator: SecureAllocator): { kek: SecretBuffer; path: string; created: boolean } {
  let path = source.kekFile;
  let created = false;
  if (source.kekCredential !== undefined) {
    const dir = process.env['CREDENTIALS_DIRECTORY'];
    if (dir === undefined || dir === '') {
      throw keyError(
        'E_KEYSTORE_KEK',
        `kek_credential ${source.kekCredential} is set but $CREDENTIALS_DIRECTORY is not; add LoadCredential=${source.kekCredential}:/etc/portcullis/kek to the unit or use kek_file`,
      );
    }
    path = join(dir, source.kekCredential);
  } else if (!exists(path)) {
    if (!source.createKek) {
      throw keyError('E_KEYSTORE_KEK', `Key-encryption key ${path} does not exist and create_kek is false; restore it from backup or set create_kek: true for a new keystore`, { details: { path } });
    }
    created = createKekFile(path);
  }
  const stat = statOrThrow(path);
  if (!stat.isFile()) throw keyError('E_KEYSTORE_KEK', `Key-encryption key ${path} is not a regular file; refusing`, { details: { path } });
  const mode = stat.mode & 0o777;
  if ((mode & 0o077) !== 0) {
    throw keyError(
      'E_KEYSTORE_KEK',
      `Key-encryption key ${path} has mode ${mode.toString(8).padStart(4, '0')}, readable beyond its owner; refusing. Run: chmod 600 ${path}`,
      { details: { path, mode: mode.toString(8) } },
    );
  }
  if (stat.size !== KEK_BYTES) {
    throw keyError('E_KEYSTORE_KEK', `Key-encryption key ${path} holds ${stat.size} bytes, not ${KEK_BYTES}; refusing (is it the right file?)`, {
      details: { path, size: stat.size },
    });
  }
  return { kek: adoptSecret(allocator, readFileSync(path)), path, created };
}

function createKekFile(path: string): boolean {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  let fd: number;
  try {
    // O_EXCL: two daemons starting at once must not each write a different KEK.
    fd = openSync(path, 'wx', 0o600);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw keyError('E_KEYSTORE_KEK', `Cannot create key-encryption key ${path} (${(err as NodeJS.ErrnoException).code ?? 'error'})`, { cause: err });
  }
  const kek = randomBytes(KEK_BYTES);
  try {
    writeSync(fd, kek);
    fsyncSync(fd);
  } finally {
    kek.fill(0);
    closeSync(fd);
  }
  return true;
}

function exists(path: string): boolean {
  try {
    lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

function statOrThrow(path: string) {
  try {
    return lstatSync(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    throw keyError('E_KEYSTORE_KEK', `Cannot read key-encryption key ${path} (${code})`, { details: { path }, cause: err });
  }
}
