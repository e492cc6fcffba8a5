import { randomFillSync, randomUUID } from 'node:crypto';
import { closeSync, fstatSync, fsyncSync, linkSync, lstatSync, mkdirSync, openSync, readSync, unlinkSync, writeSync, type Stats } from 'node:fs';
import { dirname, join } from 'node:path';
import { keyError, type KeyClientError } from '../../errors.js';
import type { SecretBuffer, SecureAllocator } from '../../../util/secure-memory.js';
import { KEK_BYTES } from './sealing.js';

/**
 * The key-encryption key (KEK) of the local keystore: 32 bytes from a
 * root-only file or a systemd credential. Anyone who can read it can read
 * every key in the keystore, so it is refused unless only its owner can.
 */

export interface KekSource {
  kekFile: string;
  /** Name of a file in $CREDENTIALS_DIRECTORY (systemd LoadCredential); wins over kekFile. */
  kekCredential?: string | undefined;
  /** Create kekFile when it is missing. Never done for credentials. */
  create: boolean;
  /** Set when the keystore already holds records: a new KEK could not open them. */
  existingKeystore?: string | undefined;
}

export interface LoadedKek {
  kek: SecretBuffer;
  path: string;
  created: boolean;
}

/** @throws E_KEYSTORE_KEK naming the path, what is wrong and the fix. */
export function loadKek(source: KekSource, allocator: SecureAllocator): LoadedKek {
  const path = source.kekCredential === undefined ? source.kekFile : credentialPath(source.kekCredential);
  let created = false;
  if (source.kekCredential !== undefined && !exists(path)) {
    throw kekError(path, `systemd credential ${source.kekCredential} is not in $CREDENTIALS_DIRECTORY (${dirname(path)}); add LoadCredential=${source.kekCredential}:/etc/portcullis/kek to the unit`);
  }
  if (source.kekCredential === undefined && !exists(path)) {
    if (source.existingKeystore !== undefined) {
      throw kekError(
        path,
        `Key-encryption key ${path} does not exist, but keystore ${source.existingKeystore} was created with one; restore the KEK from backup (a new KEK cannot open its keys), or move the keystore aside to start an empty one`,
      );
    }
    if (!source.create) {
      throw kekError(path, `Key-encryption key ${path} does not exist and create_kek is false; restore it from backup, or set create_kek: true for a new keystore`);
    }
    created = createKekFile(path);
  }
  return { kek: readKek(path, allocator), path, created };
}

function credentialPath(name: string): string {
  const dir = process.env['CREDENTIALS_DIRECTORY'];
  if (dir === undefined || dir === '') {
    throw keyError(
      'E_KEYSTORE_KEK',
      `kek_credential ${name} is set but $CREDENTIALS_DIRECTORY is not; add LoadCredential=${name}:/etc/portcullis/kek to the unit, or use kek_file`,
      { details: { credential: name } },
    );
  }
  return join(dir, name);
}

/** Reads through one descriptor, so the file checked is the file read, straight into secure memory. */
function readKek(path: string, allocator: SecureAllocator): SecretBuffer {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (err) {
    const code = errnoOf(err);
    throw kekError(path, `Cannot read key-encryption key ${path} (${code})${code === 'EACCES' ? '; portcullis must run as the KEK\'s owner (root)' : ''}`, err);
  }
  try {
    const stat = fstatSync(fd);
    if (!stat.isFile()) throw kekError(path, `Key-encryption key ${path} is not a regular file; refusing`);
    const problem = accessProblem(stat, path, 0o600);
    if (problem !== undefined) throw kekError(path, `Key-encryption key ${problem}`, undefined, { mode: modeOf(stat), uid: stat.uid });
    if (stat.size !== KEK_BYTES) {
      throw kekError(path, `Key-encryption key ${path} holds ${stat.size} bytes, not ${KEK_BYTES}; refusing (is it the right file? a KEK is 32 raw bytes, e.g. head -c 32 /dev/urandom)`, undefined, {
        size: stat.size,
      });
    }
    const kek = allocator.alloc(KEK_BYTES);
    if (readSync(fd, kek.view(), 0, KEK_BYTES, 0) !== KEK_BYTES) {
      kek.wipe();
      throw kekError(path, `Key-encryption key ${path} shrank while being read; refusing`);
    }
    return kek;
  } finally {
    closeSync(fd);
  }
}

/**
 * Creates the KEK file atomically: written and synced under a temporary name,
 * then hard-linked into place, which fails if the name exists. Two daemons
 * starting at once thus end up with one KEK, and nobody ever reads a
 * half-written one. Returns false if another process won the race.
 */
function createKekFile(path: string): boolean {
  const dir = dirname(path);
  const temp = join(dir, `.kek-${process.pid}-${randomUUID()}.tmp`);
  let fd: number;
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    fd = openSync(temp, 'wx', 0o600);
  } catch (err) {
    throw kekError(path, `Cannot create key-encryption key ${path} (${errnoOf(err)}); create it as root (head -c 32 /dev/urandom > ${path}; chmod 600 ${path}) or set kek_file`, err);
  }
  const bytes = Buffer.alloc(KEK_BYTES);
  try {
    randomFillSync(bytes);
    writeSync(fd, bytes, 0, KEK_BYTES, 0);
    fsyncSync(fd);
  } catch (err) {
    closeSync(fd);
    unlinkSync(temp);
    throw kekError(path, `Cannot write key-encryption key ${path} (${errnoOf(err)})`, err);
  } finally {
    bytes.fill(0);
  }
  closeSync(fd);
  let created = true;
  try {
    linkSync(temp, path);
  } catch (err) {
    if (errnoOf(err) !== 'EEXIST') throw kekError(path, `Cannot create key-encryption key ${path} (${errnoOf(err)})`, err);
    created = false;
  } finally {
    unlinkSync(temp);
  }
  // Without this a power cut could lose the KEK's directory entry while keys sealed under it survive.
  syncDirectory(dir);
  return created;
}

/**
 * Why a secret-bearing file must not be trusted, or undefined: bits beyond
 * `allowed` in its mode, or an owner other than us or root (who could chmod
 * it at will).
 */
export function accessProblem(stat: Stats, path: string, allowed: number): string | undefined {
  const mode = stat.mode & 0o7777;
  if ((mode & ~allowed) !== 0) {
    return `${path} has mode ${modeOf(stat)}, wider than ${allowed.toString(8).padStart(4, '0')}; refusing. Run: chmod ${allowed.toString(8)} ${path}`;
  }
  const uid = process.geteuid?.();
  if (uid !== undefined && stat.uid !== uid && stat.uid !== 0) {
    return `${path} is owned by uid ${stat.uid}, not by uid ${uid} (this process) or root; refusing. Run: chown ${uid} ${path}`;
  }
  return undefined;
}

export function syncDirectory(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

export function modeOf(stat: Stats): string {
  return (stat.mode & 0o7777).toString(8).padStart(4, '0');
}

export function errnoOf(err: unknown): string {
  return (err as NodeJS.ErrnoException).code ?? 'error';
}

/** A name that exists in any form (even a dangling link) is never replaced by a new KEK. */
function exists(path: string): boolean {
  try {
    return lstatSync(path, { throwIfNoEntry: false }) !== undefined;
  } catch {
    return true; // unreadable directory: let the read report it
  }
}

function kekError(path: string, message: string, cause?: unknown, details: Record<string, unknown> = {}): KeyClientError {
  return keyError('E_KEYSTORE_KEK', message, { details: { path, ...details }, ...(cause === undefined ? {} : { cause }) });
}
