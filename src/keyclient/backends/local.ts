import { generateKeyPair, randomFillSync, randomUUID } from 'node:crypto';
import { closeSync, lstatSync, mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import { promisify } from 'node:util';
import Database from 'better-sqlite3';
import { z } from 'zod';
import { defineBackend } from '../backend.js';
import { KeyClientError, keyError } from '../errors.js';
import type { KeyManager, KeySpec, ListOptions, RequestContext } from '../key-manager.js';
import { objectOfType, objectTypes, type ManagedObject, type ObjectType } from '../objects/index.js';
import { adoptSecret, copySecret, type SecretBuffer, type SecureAllocator } from '../secure-memory.js';
import { associatedData, loadKek, seal, unseal } from './local-sealing.js';

const optionsSchema = z.strictObject({
  /** SQLite file; created 0600, its directory 0700. */
  path: z.string().min(1).default('/var/lib/portcullis/keystore.db'),
  kek_file: z.string().min(1).default('/etc/portcullis/kek'),
  /** Name of a systemd credential ($CREDENTIALS_DIRECTORY/NAME); wins over kek_file. */
  kek_credential: z.string().regex(/^[A-Za-z0-9_.@-]+$/, 'must be a credential name').optional(),
  create_kek: z.boolean().default(true),
});
export type LocalOptions = z.output<typeof optionsSchema>;

const SCHEMA_VERSION = 1;
const FORMAT = 'portcullis-local-v1';
const AES_LENGTHS = [128, 192, 256, 512]; // 512 = AES-256-XTS, dm-crypt's usual volume key
const RSA_LENGTHS = [2048, 3072, 4096];
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

interface Row {
  id: string;
  project: string;
  type: string;
  name: string | null;
  algorithm: string | null;
  bit_length: number | null;
  created: string;
  nonce: Buffer;
  sealed: Buffer;
}

/**
 * The embedded default: one SQLite file, each object sealed with AES-256-GCM
 * under a KEK, bound to its id, project, type and metadata.
 */
export const localBackend = defineBackend({
  name: 'local',
  description: 'Embedded keystore: SQLite file, objects sealed with AES-256-GCM under a root-only key-encryption key',
  optionsSchema,
  async create(options, deps): Promise<KeyManager> {
    const { kek, path: kekPath } = loadKek(
      { kekFile: options.kek_file, createKek: options.create_kek, ...(options.kek_credential === undefined ? {} : { kekCredential: options.kek_credential }) },
      deps.allocator,
    );
    let db: Database.Database;
    try {
      db = openDatabase(options.path);
      checkKek(db, kek, kekPath, options.path, deps.allocator);
    } catch (err) {
      kek.wipe();
      throw err;
    }
    return localKeyManager(db, kek, options.path, deps.allocator);
  },
});

function openDatabase(path: string): Database.Database {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  try {
    // Create the file ourselves so it is 0600 from its first byte; SQLite gives -wal and -shm the same mode.
    closeSync(openSync(path, 'wx', 0o600));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw fileError(path, `cannot create it (${(err as NodeJS.ErrnoException).code ?? 'error'})`, err);
  }
  const mode = lstatSync(path).mode & 0o777;
  if ((mode & 0o077) !== 0) {
    throw fileError(path, `has mode ${mode.toString(8).padStart(4, '0')}, readable beyond its owner; refusing. Run: chmod 600 ${path}`);
  }
  try {
    const db = new Database(path, { fileMustExist: true });
    db.pragma('journal_mode = WAL');
    // FULL: a key lost to a power cut after we answered "created" is a volume lost; key writes are rare.
    db.pragma('synchronous = FULL');
    db.pragma('busy_timeout = 5000');
    db.exec(`
      CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
      CREATE TABLE IF NOT EXISTS objects (
        id TEXT PRIMARY KEY, project TEXT NOT NULL, type TEXT NOT NULL, name TEXT, algorithm TEXT,
        bit_length INTEGER, created TEXT NOT NULL, nonce BLOB NOT NULL, sealed BLOB NOT NULL);
      CREATE INDEX IF NOT EXISTS objects_by_project ON objects (project, type, name);`);
    const version = db.prepare('SELECT value FROM meta WHERE key = ?').get('schema_version') as { value: string | number } | undefined;
    if (version === undefined) db.prepare('INSERT INTO meta (key, value) VALUES (?, ?)').run('schema_version', SCHEMA_VERSION);
    else if (Number(version.value) > SCHEMA_VERSION) throw fileError(path, `was written by a newer portcullis (schema ${version.value}); refusing`);
    return db;
  } catch (err) {
    if (err instanceof KeyClientError) throw err;
    throw fileError(path, `cannot be opened as a keystore (${(err as Error).message})`, err);
  }
}

/**
 * A sealed check value, written when the keystore is created, tells a wrong
 * KEK apart from tampered rows at open time, with one clear message.
 */
function checkKek(db: Database.Database, kek: SecretBuffer, kekPath: string, dbPath: string, allocator: SecureAllocator): void {
  const get = (key: string) => (db.prepare('SELECT value FROM meta WHERE key = ?').get(key) as { value: Buffer | string } | undefined)?.value;
  let keystoreId = get('keystore_id');
  if (keystoreId === undefined) {
    keystoreId = randomUUID();
    const check = seal(kek, Buffer.alloc(32), associatedData([FORMAT, 'kek-check', keystoreId]));
    db.transaction(() => {
      db.prepare('INSERT INTO meta (key, value) VALUES (?, ?)').run('keystore_id', keystoreId);
      db.prepare('INSERT INTO meta (key, value) VALUES (?, ?)').run('kek_check_nonce', check.nonce);
      db.prepare('INSERT INTO meta (key, value) VALUES (?, ?)').run('kek_check', check.sealed);
    })();
    return;
  }
  const nonce = get('kek_check_nonce');
  const sealed = get('kek_check');
  const opened =
    Buffer.isBuffer(nonce) && Buffer.isBuffer(sealed)
      ? unseal(kek, { nonce, sealed }, associatedData([FORMAT, 'kek-check', String(keystoreId)]), allocator)
      : undefined;
  if (opened === undefined) {
    throw keyError('E_KEYSTORE_KEK', `The key-encryption key at ${kekPath} does not match keystore ${dbPath} (check value mismatch); restore the KEK this keystore was created with`, {
      details: { kek: kekPath, keystore: dbPath },
    });
  }
  opened.wipe();
}

function localKeyManager(db: Database.Database, kek: SecretBuffer, path: string, allocator: SecureAllocator): KeyManager {
  let closed = false;
  const keystoreId = String((db.prepare("SELECT value FROM meta WHERE key = 'keystore_id'").get() as { value: string }).value);
  const insert = db.prepare(
    'INSERT INTO objects (id, project, type, name, algorithm, bit_length, created, nonce, sealed) VALUES (@id, @project, @type, @name, @algorithm, @bit_length, @created, @nonce, @sealed)',
  );
  const selectOne = db.prepare('SELECT * FROM objects WHERE id = ? AND project = ?');
  const idTaken = db.prepare('SELECT 1 FROM objects WHERE id = ?');
  const remove = db.prepare('DELETE FROM objects WHERE id = ? AND project = ?');

  const adFor = (row: Omit<Row, 'nonce' | 'sealed'>) =>
    associatedData([FORMAT, keystoreId, row.id, row.project, row.type, row.name ?? undefined, row.algorithm ?? undefined, row.bit_length ?? undefined, row.created]);

  const guard = <T>(fn: () => T): T => {
    if (closed) throw keyError('E_BACKEND_UNAVAILABLE', `The local keystore ${path} was closed`);
    try {
      return fn();
    } catch (err) {
      if (err instanceof KeyClientError) throw err;
      const code = (err as { code?: string }).code ?? '';
      if (code === 'SQLITE_BUSY' || code === 'SQLITE_LOCKED') throw keyError('E_BACKEND_UNAVAILABLE', `The local keystore ${path} is locked by another process (${code})`, { cause: err, details: { requestSent: false } });
      throw fileError(path, `failed: ${(err as Error).message}`, err);
    }
  };

  const put = (ctx: RequestContext, type: ObjectType, meta: { name?: string | undefined; algorithm?: string | undefined; bitLength?: number | undefined }, secret: Buffer, wantedId?: string): string =>
    guard(() => {
      const id = wantedId !== undefined && UUID.test(wantedId) && idTaken.get(wantedId) === undefined ? wantedId : randomUUID();
      const row = {
        id,
        project: ctx.projectId,
        type,
        name: meta.name ?? null,
        algorithm: meta.algorithm?.toLowerCase() ?? null,
        bit_length: meta.bitLength ?? null,
        created: new Date().toISOString(),
      };
      insert.run({ ...row, ...seal(kek, secret, adFor(row)) });
      return id;
    });

  const read = (ctx: RequestContext, id: string, metadataOnly: boolean): ManagedObject =>
    guard(() => {
      const row = selectOne.get(id, ctx.projectId) as Row | undefined;
      // Another project's object is indistinguishable from a missing one.
      if (row === undefined) throw keyError('E_KEY_NOT_FOUND', `Key ${id} not found in project ${ctx.projectId}`, { details: { id } });
      const secret = unseal(kek, { nonce: row.nonce, sealed: row.sealed }, adFor(row), allocator);
      if (secret === undefined || !(objectTypes as readonly string[]).includes(row.type)) {
        secret?.wipe();
        throw keyError('E_KEYSTORE_INTEGRITY', `Keystore ${path}: record ${id} failed authentication (edited, swapped or corrupted); refusing to return it`, { details: { id } });
      }
      // Integrity is checked on every read; a metadata-only answer then drops the bytes.
      if (metadataOnly) secret.wipe();
      return objectOfType(row.type as ObjectType, metaOf(row), metadataOnly ? undefined : secret);
    });

  return {
    name: 'local',
    capabilities: { createKeyPair: true, storeAny: true, deletes: true, projectScoped: true },
    async createKey(ctx, spec: KeySpec) {
      if (spec.algorithm.toLowerCase() !== 'aes' || !AES_LENGTHS.includes(spec.length)) {
        throw keyError('E_INVALID_ARGUMENT', `Cannot create a ${spec.algorithm} key of ${spec.length} bits (the local keystore makes AES keys of ${AES_LENGTHS.join(', ')} bits)`, {
          details: { algorithm: spec.algorithm, length: spec.length },
        });
      }
      const secret = allocator.alloc(spec.length / 8);
      try {
        randomFillSync(secret.view());
        return put(ctx, 'symmetric', { name: spec.name, algorithm: 'aes', bitLength: spec.length }, secret.view());
      } finally {
        secret.wipe();
      }
    },
    async createKeyPair(ctx, spec: KeySpec) {
      if (spec.algorithm.toLowerCase() !== 'rsa' || !RSA_LENGTHS.includes(spec.length)) {
        throw keyError('E_INVALID_ARGUMENT', `Cannot create a ${spec.algorithm} key pair of ${spec.length} bits (RSA ${RSA_LENGTHS.join(', ')} only)`);
      }
      const pair = await promisify(generateKeyPair)('rsa', {
        modulusLength: spec.length,
        publicKeyEncoding: { type: 'spki', format: 'der' },
        privateKeyEncoding: { type: 'pkcs8', format: 'der' },
      });
      const privateSecret = adoptSecret(allocator, pair.privateKey);
      try {
        const meta = { name: spec.name, algorithm: 'rsa', bitLength: spec.length };
        return {
          privateKeyId: put(ctx, 'private', meta, privateSecret.view()),
          publicKeyId: put(ctx, 'public', meta, pair.publicKey),
        };
      } finally {
        privateSecret.wipe();
      }
    },
    async store(ctx, obj) {
      const secret = copySecret(allocator, obj.bytes());
      try {
        return put(ctx, obj.type, { name: obj.name, algorithm: obj.algorithm, bitLength: obj.bitLength }, secret.view(), obj.id);
      } finally {
        secret.wipe();
      }
    },
    async get(ctx, id, options) {
      return read(ctx, id, options?.metadataOnly === true);
    },
    async delete(ctx, id) {
      guard(() => {
        if (remove.run(id, ctx.projectId).changes === 0) throw keyError('E_KEY_NOT_FOUND', `Key ${id} not found in project ${ctx.projectId}`, { details: { id } });
      });
    },
    async list(ctx, options: ListOptions = {}) {
      return guard(() => {
        const where = ['project = ?'];
        const params: string[] = [ctx.projectId];
        if (options.type !== undefined) {
          where.push('type = ?');
          params.push(options.type);
        }
        if (options.name !== undefined) {
          where.push('name = ?');
          params.push(options.name);
        }
        const rows = db
          .prepare(`SELECT id, project, type, name, algorithm, bit_length, created FROM objects WHERE ${where.join(' AND ')} ORDER BY created, id`)
          .all(...params) as Row[];
        return rows.filter((r) => (objectTypes as readonly string[]).includes(r.type)).map((r) => objectOfType(r.type as ObjectType, metaOf(r), undefined));
      });
    },
    async health() {
      if (closed) return { ok: false, detail: `local keystore ${path} is closed` };
      const count = (db.prepare('SELECT count(*) AS n FROM objects').get() as { n: number }).n;
      return { ok: true, detail: `local keystore ${path}: ${count} object(s)` };
    },
    async close() {
      if (closed) return;
      closed = true;
      db.close();
      kek.wipe();
    },
  };
}

function metaOf(row: Omit<Row, 'nonce' | 'sealed'>) {
  return {
    id: row.id,
    created: new Date(row.created),
    ...(row.name === null ? {} : { name: row.name }),
    ...(row.algorithm === null ? {} : { algorithm: row.algorithm }),
    ...(row.bit_length === null ? {} : { bitLength: row.bit_length }),
  };
}

function fileError(path: string, what: string, cause?: unknown): KeyClientError {
  return keyError('E_KEYSTORE_FILE', `Keystore ${path} ${what}`, { details: { path }, ...(cause === undefined ? {} : { cause }) });
}
