import { generateKeyPair, randomFillSync, randomUUID } from 'node:crypto';
import { promisify } from 'node:util';
import type Database from 'better-sqlite3';
import { defineBackend } from '../../backend.js';
import { keyError } from '../../errors.js';
import type { KeyManager, KeyPairIds, KeySpec, ListOptions, RequestContext } from '../../key-manager.js';
import { objectOfType, objectTypes, type ManagedObject, type ObjectType } from '../../objects/index.js';
import { adoptSecret, type SecretBuffer, type SecureAllocator } from '../../../util/secure-memory.js';
import { bindKek, isInitialised, openKeystoreDb, RECORD_FORMAT, sqliteFailure } from './db.js';
import { loadKek } from './kek.js';
import { associatedData, seal, unseal } from './sealing.js';

import { localOptionsSchema as optionsSchema, type LocalOptions } from './options.js';

export type { LocalOptions };

const AES_LENGTHS = [128, 192, 256, 512]; // 512 = AES-256-XTS, dm-crypt's usual volume key
const RSA_LENGTHS = [2048, 3072, 4096];
const EC_CURVES: Record<number, string> = { 256: 'prime256v1', 384: 'secp384r1', 521: 'secp521r1' };
const MAX_NAME = 255; // Barbican's limit, so names survive a migration either way
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

interface RowMeta {
  id: string;
  project: string;
  type: string;
  name: string | null;
  algorithm: string | null;
  bit_length: number | null;
  created: string;
}
interface Row extends RowMeta {
  nonce: Buffer;
  sealed: Buffer;
}
interface NewObject {
  type: ObjectType;
  name?: string | undefined;
  algorithm?: string | undefined;
  bitLength?: number | undefined;
  /** Kept when it is a UUID no record uses. */
  wantedId?: string | undefined;
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
    const db = openKeystoreDb(options.path);
    try {
      const { kek, path: kekPath } = loadKek(
        {
          kekFile: options.kek_file,
          kekCredential: options.kek_credential,
          create: options.create_kek,
          existingKeystore: isInitialised(db) ? options.path : undefined,
        },
        deps.allocator,
      );
      try {
        const keystoreId = bindKek(db, kek, kekPath, options.path, deps.allocator);
        return localKeyManager({ db, kek, keystoreId, path: options.path, allocator: deps.allocator, now: deps.now ?? Date.now });
      } catch (err) {
        kek.wipe();
        throw err;
      }
    } catch (err) {
      db.close();
      throw sqliteFailure(options.path, err, 'opening it');
    }
  },
});

interface Store {
  db: Database.Database;
  kek: SecretBuffer;
  keystoreId: string;
  path: string;
  allocator: SecureAllocator;
  now: () => number;
}

function localKeyManager(store: Store): KeyManager {
  const { db, kek, path, allocator } = store;
  let closed = false;
  const insert = db.prepare(
    'INSERT INTO objects (id, project, type, name, algorithm, bit_length, created, nonce, sealed) VALUES (@id, @project, @type, @name, @algorithm, @bit_length, @created, @nonce, @sealed)',
  );
  const selectOne = db.prepare('SELECT * FROM objects WHERE id = ? AND project = ?');
  const idTaken = db.prepare('SELECT 1 FROM objects WHERE id = ? AND project = ?');
  const remove = db.prepare('DELETE FROM objects WHERE id = ? AND project = ?');
  const adFor = (row: RowMeta) =>
    associatedData([RECORD_FORMAT, store.keystoreId, row.id, row.project, row.type, row.name ?? undefined, row.algorithm ?? undefined, row.bit_length ?? undefined, row.created]);

  /** Runs `fn` on an open keystore, mapping SQLite failures to the error contract. */
  const guard = <T>(doing: string, fn: () => T): T => {
    if (closed) throw keyError('E_BACKEND_UNAVAILABLE', `The local keystore ${path} was closed; open a new key manager`, { details: { path, requestSent: false } });
    try {
      return fn();
    } catch (err) {
      throw sqliteFailure(path, err, doing);
    }
  };

  /** Seals and inserts each object in one transaction (a key pair is stored whole or not at all). */
  const put = (ctx: RequestContext, objects: ReadonlyArray<{ meta: NewObject; secret: Uint8Array }>): string[] =>
    guard('storing', () =>
      db.transaction(() =>
        objects.map(({ meta, secret }) => {
          const wanted = meta.wantedId;
          const id = wanted !== undefined && UUID.test(wanted) && idTaken.get(wanted, ctx.projectId) === undefined ? wanted : randomUUID();
          const row: RowMeta = {
            id,
            project: ctx.projectId,
            type: meta.type,
            name: meta.name ?? null,
            algorithm: meta.algorithm?.toLowerCase() ?? null,
            bit_length: meta.bitLength ?? null,
            created: new Date(store.now()).toISOString(),
          };
          insert.run({ ...row, ...seal(kek, secret, adFor(row)) });
          return id;
        }),
      ).immediate(),
    );

  const read = (ctx: RequestContext, id: string, metadataOnly: boolean): ManagedObject =>
    guard('reading', () => {
      const row = selectOne.get(id, ctx.projectId) as Row | undefined;
      // Another project's object is indistinguishable from a missing one.
      if (row === undefined) throw notFound(ctx, id);
      // Authenticated even for metadata-only reads, so an edited name or algorithm is never served;
      // the bytes go into secure memory and, for those, are wiped at once.
      const secret = unseal(kek, { nonce: row.nonce, sealed: row.sealed }, adFor(row), allocator);
      if (secret === undefined || !isObjectType(row.type)) {
        secret?.wipe();
        throw keyError('E_KEYSTORE_INTEGRITY', `Keystore ${path}: record ${id} failed authentication (edited, swapped or corrupted); refusing to return it. Restore the keystore from backup and find out who wrote to it`, {
          details: { id, path },
        });
      }
      if (metadataOnly) secret.wipe();
      return objectOfType(row.type, metaOf(row), metadataOnly ? undefined : secret);
    });

  return {
    name: 'local',
    capabilities: { createKeyPair: true, storeAny: true, deletes: true, projectScoped: true },
    async createKey(ctx, spec) {
      checkContext(ctx);
      checkName(spec.name);
      if (spec.algorithm.toLowerCase() !== 'aes' || !AES_LENGTHS.includes(spec.length)) {
        throw keyError('E_INVALID_ARGUMENT', `Cannot create a ${spec.algorithm} key of ${spec.length} bits (the local keystore makes AES keys of ${AES_LENGTHS.join(', ')} bits)`, {
          details: { algorithm: spec.algorithm, length: spec.length },
        });
      }
      const secret = allocator.alloc(spec.length / 8);
      try {
        randomFillSync(secret.view());
        const [id] = put(ctx, [{ meta: { type: 'symmetric', name: spec.name, algorithm: 'aes', bitLength: spec.length }, secret: secret.view() }]);
        return id as string;
      } finally {
        secret.wipe();
      }
    },
    async createKeyPair(ctx, spec) {
      checkContext(ctx);
      checkName(spec.name);
      const pair = await generatePair(spec);
      const privateSecret = adoptSecret(allocator, pair.privateKey);
      try {
        const meta = { name: spec.name, algorithm: spec.algorithm.toLowerCase(), bitLength: spec.length };
        const [privateKeyId, publicKeyId] = put(ctx, [
          { meta: { ...meta, type: 'private' }, secret: privateSecret.view() },
          { meta: { ...meta, type: 'public' }, secret: pair.publicKey },
        ]);
        return { privateKeyId, publicKeyId } as KeyPairIds;
      } finally {
        privateSecret.wipe();
      }
    },
    async store(ctx, obj) {
      checkContext(ctx);
      checkName(obj.name);
      if (!isObjectType(obj.type)) throw keyError('E_INVALID_ARGUMENT', `Cannot store an object of unknown type ${String(obj.type)}`);
      if (obj.metadataOnly || obj.zeroized) {
        throw keyError('E_INVALID_ARGUMENT', `Cannot store ${obj.type} object ${obj.id ?? ''}: it carries no bytes (${obj.metadataOnly ? 'fetched metadata-only' : 'zeroized'})`);
      }
      // Sealed straight from the caller's buffer: no copy of the secret is made here.
      // A UUID free in this project is kept, so `key migrate` preserves the ids volumes refer to. A taken one gets a
      // new id rather than an error: store() returns the id to use (as Castellan's does), and
      // refusing would fail a copy that every other backend accepts.
      const [id] = put(ctx, [{ meta: { type: obj.type, name: obj.name, algorithm: obj.algorithm, bitLength: obj.bitLength, wantedId: obj.id }, secret: obj.bytes() }]);
      return id as string;
    },
    async get(ctx, id, options) {
      checkContext(ctx);
      return read(ctx, id, options?.metadataOnly === true);
    },
    async delete(ctx, id) {
      checkContext(ctx);
      guard('deleting', () => {
        if (db.transaction(() => remove.run(id, ctx.projectId).changes).immediate() === 0) throw notFound(ctx, id);
        // Crypto-erase: fold the WAL (which still holds the sealed record) back into the file,
        // where secure_delete has zeroed it. Best effort: busy readers make it a no-op until the next checkpoint.
        db.pragma('wal_checkpoint(TRUNCATE)');
      });
    },
    async list(ctx, options: ListOptions = {}) {
      checkContext(ctx);
      // Metadata from plaintext columns, not authenticated: list() finds objects, get() vouches for them.
      return guard('listing', () => {
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
        const sql = `SELECT id, project, type, name, algorithm, bit_length, created FROM objects WHERE ${where.join(' AND ')} ORDER BY created, id`;
        const rows = db.prepare(sql).all(...params) as RowMeta[];
        return rows.flatMap((row) => (isObjectType(row.type) ? [objectOfType(row.type, metaOf(row), undefined)] : []));
      });
    },
    async health() {
      if (closed) return { ok: false, detail: `local keystore ${path} is closed` };
      try {
        const count = (db.prepare('SELECT count(*) AS n FROM objects').get() as { n: number }).n;
        // Read-only (its file system is): keys are served, none can be made; an operator should know before an ephemeral attach fails.
        const readOnly = db.readonly ? ', read-only (its file system is mounted read-only): keys are served, none can be created or deleted' : '';
        return { ok: true, detail: `local keystore ${path}: ${count} object(s)${readOnly}` };
      } catch (err) {
        return { ok: false, detail: sqliteFailure(path, err, 'checking health').message };
      }
    },
    async close() {
      if (closed) return;
      closed = true;
      kek.wipe();
      db.close();
    },
  };
}

const generate = promisify(generateKeyPair);

async function generatePair(spec: KeySpec): Promise<{ privateKey: Buffer; publicKey: Buffer }> {
  const algorithm = spec.algorithm.toLowerCase();
  const curve = EC_CURVES[spec.length];
  if (algorithm === 'rsa' && RSA_LENGTHS.includes(spec.length)) {
    return generate('rsa', {
      modulusLength: spec.length,
      publicKeyEncoding: { type: 'spki', format: 'der' },
      privateKeyEncoding: { type: 'pkcs8', format: 'der' },
    });
  }
  if (algorithm === 'ec' && curve !== undefined) {
    return generate('ec', {
      namedCurve: curve,
      publicKeyEncoding: { type: 'spki', format: 'der' },
      privateKeyEncoding: { type: 'pkcs8', format: 'der' },
    });
  }
  throw keyError(
    'E_INVALID_ARGUMENT',
    `Cannot create a ${spec.algorithm} key pair of ${spec.length} bits (the local keystore makes RSA ${RSA_LENGTHS.join('/')} and EC ${Object.keys(EC_CURVES).join('/')})`,
    { details: { algorithm: spec.algorithm, length: spec.length } },
  );
}

function checkContext(ctx: RequestContext): void {
  if (typeof ctx.projectId !== 'string' || ctx.projectId === '') throw keyError('E_INVALID_ARGUMENT', 'A request needs a project id; got none');
}

function checkName(name: string | undefined): void {
  if (name !== undefined && name.length > MAX_NAME) throw keyError('E_INVALID_ARGUMENT', `Object name is ${name.length} characters; at most ${MAX_NAME} are kept`);
}

function isObjectType(type: string): type is ObjectType {
  return (objectTypes as readonly string[]).includes(type);
}

function notFound(ctx: RequestContext, id: string) {
  return keyError('E_KEY_NOT_FOUND', `Key ${id} not found in project ${ctx.projectId}`, { details: { id } });
}

function metaOf(row: RowMeta) {
  return {
    id: row.id,
    created: new Date(row.created),
    ...(row.name === null ? {} : { name: row.name }),
    ...(row.algorithm === null ? {} : { algorithm: row.algorithm }),
    ...(row.bit_length === null ? {} : { bitLength: row.bit_length }),
  };
}
