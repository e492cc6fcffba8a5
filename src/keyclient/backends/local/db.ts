import { randomUUID } from 'node:crypto';
import { accessSync, closeSync, constants, mkdirSync, openSync, readFileSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import { KeyClientError, keyError } from '../../errors.js';
import type { SecretBuffer, SecureAllocator } from '../../../util/secure-memory.js';
import { accessProblem, errnoOf, syncDirectory } from './kek.js';
import { associatedData, seal, unseal } from './sealing.js';

/** The local keystore's SQLite file: creation, modes, pragmas, schema, and binding to its KEK. */

/** 2: ids are unique per project (primary key (project, id)), so `key migrate` keeps an id in every project. */
export const SCHEMA_VERSION = 2;
/** Bound into every record's associated data; bump when the record layout changes. */
export const RECORD_FORMAT = 'portcullis-local-v1';
/**
 * better-sqlite3 waits for a lock on the event loop's thread, stalling the
 * whole daemon; writers (this daemon, the admin CLI) hold the lock for one
 * small transaction, so a short wait is plenty.
 */
const BUSY_TIMEOUT_MS = 1000;

const OBJECTS_COLUMNS = `id TEXT NOT NULL, project TEXT NOT NULL, type TEXT NOT NULL, name TEXT, algorithm TEXT,
    bit_length INTEGER, created TEXT NOT NULL, nonce BLOB NOT NULL, sealed BLOB NOT NULL, PRIMARY KEY (project, id)`;

const SCHEMA = `
  CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
  CREATE TABLE IF NOT EXISTS objects (${OBJECTS_COLUMNS});
  CREATE INDEX IF NOT EXISTS objects_by_project ON objects (project, type, name);`;

/** Version 1 had ids unique across projects; the rows are kept as they are (the sealing binds id and project, unchanged). */
const FROM_VERSION_1 = `
  CREATE TABLE objects_v2 (${OBJECTS_COLUMNS});
  INSERT INTO objects_v2 (id, project, type, name, algorithm, bit_length, created, nonce, sealed)
    SELECT id, project, type, name, algorithm, bit_length, created, nonce, sealed FROM objects;
  DROP TABLE objects;
  ALTER TABLE objects_v2 RENAME TO objects;
  CREATE INDEX IF NOT EXISTS objects_by_project ON objects (project, type, name);`;

/**
 * Opens (creating if needed) the keystore file at `path`.
 * @throws E_KEYSTORE_FILE for a bad mode, owner or file; E_BACKEND_UNAVAILABLE when locked.
 */
export function openKeystoreDb(path: string): Database.Database {
  if (onReadOnlyFileSystem(path)) return openReadOnly(path);
  createPrivateFile(path);
  for (const file of [path, `${path}-wal`, `${path}-shm`]) checkFile(file, file === path);
  let db: Database.Database;
  try {
    db = new Database(path, { fileMustExist: true });
  } catch (err) {
    throw sqliteFailure(path, err, 'opening it');
  }
  try {
    db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
    const journal = db.pragma('journal_mode = WAL', { simple: true });
    if (journal !== 'wal') throw fileError(path, `cannot use WAL journaling here (SQLite chose ${String(journal)}); put it on a local filesystem`);
    // FULL: a key lost to a power cut after we answered "created" is a volume lost; key writes are rare.
    db.pragma('synchronous = FULL');
    // Deleted records are overwritten, not just unlinked: part of crypto-erase.
    db.pragma('secure_delete = ON');
    db.transaction(() => {
      const version = db.prepare("SELECT 1 FROM sqlite_master WHERE name = 'meta'").get() === undefined ? undefined : readMeta(db, 'schema_version');
      if (version !== undefined && Number(version) === 1) {
        db.exec(FROM_VERSION_1);
        writeMeta(db, 'schema_version', SCHEMA_VERSION);
        return;
      }
      db.exec(SCHEMA);
      if (version === undefined) writeMeta(db, 'schema_version', SCHEMA_VERSION);
      else if (Number(version) !== SCHEMA_VERSION) {
        throw fileError(path, `has schema version ${String(version)}, this portcullis reads ${SCHEMA_VERSION}; refusing (use the portcullis that wrote it)`);
      }
    }).immediate();
    return db;
  } catch (err) {
    db.close();
    throw sqliteFailure(path, err, 'opening it');
  }
}

/** Whether `path` exists on a file system mounted read-only (access(2) answers EROFS even for root). */
function onReadOnlyFileSystem(path: string): boolean {
  try {
    accessSync(path, constants.W_OK);
    return false;
  } catch (err) {
    return errnoOf(err) === 'EROFS';
  }
}

/**
 * A keystore whose file system is mounted read-only (an ext4 that remounted
 * itself read-only after an I/O error, a read-only /var) still serves the
 * keys it holds, so volumes keep attaching while an operator fixes the disk;
 * every write fails with E_KEYSTORE_FILE (SQLITE_READONLY). SQLite cannot
 * open a WAL database there once its -shm file is gone (a clean close removes
 * it), so the checkpointed file is read into memory and opened read-only: it
 * holds only sealed records, the KEK stays where it was. A leftover -wal with
 * commits in it is opened in place instead, or those commits would be missed.
 * @throws E_KEYSTORE_FILE
 */
function openReadOnly(path: string): Database.Database {
  for (const file of [path, `${path}-wal`, `${path}-shm`]) checkFile(file, file === path);
  const walBytes = statSync(`${path}-wal`, { throwIfNoEntry: false })?.size ?? 0;
  let db: Database.Database;
  try {
    if (walBytes > 0) {
      db = new Database(path, { readonly: true, fileMustExist: true });
    } else {
      const image = readFileSync(path);
      // Header bytes 18-19 say "WAL" (2); an in-memory image has no WAL, and with nothing left in one the legacy value (1) reads the same pages.
      if (image.length >= 100 && image[18] === 2 && image[19] === 2) image.fill(1, 18, 20);
      db = new Database(image, { readonly: true });
      image.fill(0);
    }
  } catch (err) {
    throw sqliteFailure(path, err, 'opening it read-only (its file system is mounted read-only)');
  }
  try {
    const version = db.prepare("SELECT 1 FROM sqlite_master WHERE name = 'meta'").get() === undefined ? undefined : readMeta(db, 'schema_version');
    if (version === undefined || !isInitialised(db)) throw fileError(path, 'is on a read-only file system and was never initialised; mount it read-write so portcullis can create it');
    if (Number(version) !== SCHEMA_VERSION) throw fileError(path, `has schema version ${String(version)} and is on a read-only file system, so it cannot be upgraded to ${SCHEMA_VERSION}; mount it read-write`);
    return db;
  } catch (err) {
    db.close();
    throw sqliteFailure(path, err, 'opening it read-only');
  }
}

/** The file is created 0600 by us before SQLite sees it, so it is never readable by others, not even for a moment. */
function createPrivateFile(path: string): void {
  try {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    closeSync(openSync(path, 'wx', 0o600));
    syncDirectory(dirname(path));
  } catch (err) {
    if (errnoOf(err) !== 'EEXIST') throw fileError(path, `cannot be created (${errnoOf(err)}); check that ${dirname(path)} is writable by portcullis`, err);
  }
}

/** SQLite gives -wal and -shm the main file's mode; a leftover one with a wider mode is refused too. */
function checkFile(path: string, mustExist: boolean): void {
  const stat = statSync(path, { throwIfNoEntry: false });
  if (stat === undefined) {
    if (mustExist) throw fileError(path, 'vanished while being opened');
    return;
  }
  if (!stat.isFile()) throw fileError(path, 'is not a regular file; refusing');
  const problem = accessProblem(stat, path, 0o600);
  if (problem !== undefined) throw keyError('E_KEYSTORE_FILE', `Keystore file ${problem}`, { details: { path } });
}

export function readMeta(db: Database.Database, key: string): Buffer | string | number | undefined {
  return (db.prepare('SELECT value FROM meta WHERE key = ?').get(key) as { value: Buffer | string | number } | undefined)?.value;
}

function writeMeta(db: Database.Database, key: string, value: Buffer | string | number): void {
  db.prepare('INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)').run(key, value);
}

/**
 * Ties the keystore to its KEK and returns the keystore's id. A new keystore
 * gets an id and a sealed check value; an existing one must open that check
 * value, so a wrong KEK is one clear error at start, not an integrity error
 * on every record. One transaction, so two processes creating the keystore
 * at once agree on one id.
 * @throws E_KEYSTORE_KEK when the KEK does not match.
 */
export function bindKek(db: Database.Database, kek: SecretBuffer, kekPath: string, path: string, allocator: SecureAllocator): string {
  const bind = db.transaction(() => {
    const existing = readMeta(db, 'keystore_id');
    const checkAd = (id: string) => associatedData([RECORD_FORMAT, 'kek-check', id]);
    if (existing === undefined) {
      const id = randomUUID();
      const check = seal(kek, Buffer.alloc(32), checkAd(id));
      writeMeta(db, 'keystore_id', id);
      writeMeta(db, 'kek_check_nonce', check.nonce);
      writeMeta(db, 'kek_check', check.sealed);
      return id;
    }
    const id = String(existing);
    const nonce = readMeta(db, 'kek_check_nonce');
    const sealed = readMeta(db, 'kek_check');
    if (!Buffer.isBuffer(nonce) || !Buffer.isBuffer(sealed)) {
      throw keyError('E_KEYSTORE_INTEGRITY', `Keystore ${path} has lost its KEK check value (meta table edited or damaged); restore it from backup`, { details: { path } });
    }
    const opened = unseal(kek, { nonce, sealed }, checkAd(id), allocator);
    if (opened === undefined) {
      throw keyError(
        'E_KEYSTORE_KEK',
        `The key-encryption key at ${kekPath} does not match keystore ${path} (check value mismatch); point kek_file or kek_credential at the KEK this keystore was created with, or restore it from backup`,
        { details: { kek: kekPath, keystore: path } },
      );
    }
    opened.wipe();
    return id;
  });
  // A read-only keystore (openReadOnly) only checks its KEK, and cannot take the write lock.
  return db.readonly ? bind.deferred() : bind.immediate();
}

/** Whether the keystore was bound to a KEK (holds, or may hold, sealed records). */
export function isInitialised(db: Database.Database): boolean {
  return readMeta(db, 'keystore_id') !== undefined;
}

/**
 * Maps a SQLite failure to the error contract: a lock or a full or failing
 * disk may pass (E_BACKEND_UNAVAILABLE, which a cache may ride out); a
 * damaged or unwritable file needs an operator (E_KEYSTORE_FILE).
 */
export function sqliteFailure(path: string, err: unknown, doing: string): KeyClientError {
  if (err instanceof KeyClientError) return err;
  const code = String((err as { code?: unknown }).code ?? '');
  const message = err instanceof Error ? err.message : String(err);
  const details = { path, sqlite: code };
  if (/^SQLITE_(BUSY|LOCKED)/.test(code)) {
    return keyError('E_BACKEND_UNAVAILABLE', `Keystore ${path} is locked by another process (${code}) while ${doing}; retry, or find the holder with: fuser ${path}`, {
      cause: err,
      details: { ...details, requestSent: false },
    });
  }
  if (/^SQLITE_(FULL|IOERR)/.test(code)) {
    return keyError('E_BACKEND_UNAVAILABLE', `Keystore ${path}: ${doing} failed (${code}: ${message}); check free space and the disk (df, dmesg)`, { cause: err, details });
  }
  if (/^SQLITE_(CORRUPT|NOTADB)/.test(code)) {
    return fileError(path, `is damaged or not a SQLite database (${code}); restore it from backup`, err);
  }
  if (/^SQLITE_(READONLY|CANTOPEN|PERM|AUTH)/.test(code)) {
    return fileError(path, `cannot be opened for writing (${code}: ${message}); check that it and its directory are writable by portcullis and the filesystem is mounted read-write`, err);
  }
  return fileError(path, `failed while ${doing}: ${message}`, err);
}

export function fileError(path: string, what: string, cause?: unknown): KeyClientError {
  return keyError('E_KEYSTORE_FILE', `Keystore ${path} ${what}`, { details: { path }, ...(cause === undefined ? {} : { cause }) });
}
