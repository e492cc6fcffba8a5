import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, createPrivateKey, randomBytes, randomUUID } from 'node:crypto';
import { chmodSync, chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { localBackend } from '../../../../src/keyclient/backends/local/backend.js';
import type { KeyManager } from '../../../../src/keyclient/key-manager.js';
import { objectOfType } from '../../../../src/keyclient/objects/index.js';
import { adoptSecret, plainAllocator, type SecureAllocator } from '../../../../src/util/secure-memory.js';
import { rejectsWithCode } from '../../../helpers/errors.js';
import { keyManagerContract } from '../../contract.js';

const root = mkdtempSync(join(tmpdir(), 'portcullis-local-'));
after(() => rmSync(root, { recursive: true, force: true }));
const allocator = plainAllocator();
const a = { projectId: 'project-a' };

/** A fresh keystore directory: db and KEK paths inside it. */
function keystore(name: string = randomUUID()) {
  const dir = join(root, name);
  return { dir, path: join(dir, 'keystore.db'), kek_file: join(dir, 'kek') };
}

function open(options: Record<string, unknown>, using: SecureAllocator = allocator): Promise<KeyManager> {
  const { dir: _dir, ...backendOptions } = options;
  return localBackend.create(localBackend.optionsSchema.parse(backendOptions), { allocator: using });
}

const asRoot = { skip: process.geteuid?.() === 0 ? false : 'needs root to chown a file to another user' };

function tamper(path: string, fn: (db: Database.Database) => void): void {
  const db = new Database(path);
  try {
    fn(db);
  } finally {
    db.close();
  }
}

const shared = keystore('contract');
keyManagerContract({
  name: 'local',
  open: () => open(shared),
  projectA: () => a,
  projectB: () => ({ projectId: 'project-b' }),
});

describe('local keystore: files and modes', () => {
  it('creates the database 0600 in a 0700 directory, and a 32-byte KEK 0600 on first run', async () => {
    const ks = keystore();
    const km = await open(ks);
    await km.createKey(a, { algorithm: 'aes', length: 256 });
    await km.close();
    assert.equal(statSync(ks.path).mode & 0o777, 0o600);
    assert.equal(statSync(ks.dir).mode & 0o777, 0o700);
    assert.equal(statSync(ks.kek_file).mode & 0o777, 0o600);
    assert.equal(statSync(ks.kek_file).size, 32);
  });

  it('refuses a database file readable by group or others (E_KEYSTORE_FILE), naming the chmod', async () => {
    const ks = keystore();
    await (await open(ks)).close();
    chmodSync(ks.path, 0o644);
    const err = await rejectsWithCode(open(ks), 'E_KEYSTORE_FILE');
    assert.match(err.message, /0644.*chmod 600/);
  });

  it('refuses a leftover -wal file readable by others', async () => {
    const ks = keystore();
    await (await open(ks)).close();
    writeFileSync(`${ks.path}-wal`, '', { mode: 0o644 });
    chmodSync(`${ks.path}-wal`, 0o644);
    assert.match((await rejectsWithCode(open(ks), 'E_KEYSTORE_FILE')).message, /-wal has mode 0644/);
  });

  it('refuses a database file owned by another user, naming the chown', asRoot, async () => {
    const ks = keystore();
    await (await open(ks)).close();
    chownSync(ks.path, 65534, 65534);
    assert.match((await rejectsWithCode(open(ks), 'E_KEYSTORE_FILE')).message, /owned by uid 65534.*chown/);
  });

  it('a write while another process holds the write lock is E_BACKEND_UNAVAILABLE, and reads go on', async () => {
    const ks = keystore();
    const km = await open(ks);
    const id = await km.createKey(a, { algorithm: 'aes', length: 256 });
    const holder = new Database(ks.path);
    holder.exec('BEGIN IMMEDIATE');
    try {
      const err = await rejectsWithCode(km.createKey(a, { algorithm: 'aes', length: 256 }), 'E_BACKEND_UNAVAILABLE');
      assert.match(err.message, /locked by another process/);
      assert.equal((await km.get(a, id)).bytes().length, 32, 'WAL readers are not blocked by a writer');
    } finally {
      holder.exec('ROLLBACK');
      holder.close();
    }
    await km.createKey(a, { algorithm: 'aes', length: 256 });
    await km.close();
  });

  it('refuses a file that is not a SQLite database (E_KEYSTORE_FILE)', async () => {
    const ks = keystore();
    await (await open(ks)).close();
    writeFileSync(ks.path, randomBytes(4096), { mode: 0o600 });
    await rejectsWithCode(open(ks), 'E_KEYSTORE_FILE');
  });
});

describe('local keystore: the key-encryption key', () => {
  it('refuses a KEK with mode 0640, naming the mode and the fix', async () => {
    const ks = keystore();
    await (await open(ks)).close();
    chmodSync(ks.kek_file, 0o640);
    const err = await rejectsWithCode(open(ks), 'E_KEYSTORE_KEK');
    assert.match(err.message, /mode 0640.*chmod 600/);
  });

  it('refuses a KEK of the wrong size', async () => {
    const ks = keystore();
    await (await open(ks)).close();
    writeFileSync(ks.kek_file, randomBytes(16), { mode: 0o600 });
    assert.match((await rejectsWithCode(open(ks), 'E_KEYSTORE_KEK')).message, /16 bytes, not 32/);
  });

  it('says plainly when the KEK does not match the keystore', async () => {
    const ks = keystore();
    const km = await open(ks);
    await km.createKey(a, { algorithm: 'aes', length: 256 });
    await km.close();
    writeFileSync(ks.kek_file, randomBytes(32), { mode: 0o600 });
    const err = await rejectsWithCode(open(ks), 'E_KEYSTORE_KEK');
    assert.ok(err.message.includes(`key-encryption key at ${ks.kek_file} does not match keystore ${ks.path} (check value mismatch)`), err.message);
  });

  it('never invents a new KEK for an existing keystore whose KEK is missing, even with create_kek: true', async () => {
    const ks = keystore();
    const km = await open(ks);
    await km.createKey(a, { algorithm: 'aes', length: 256 });
    await km.close();
    rmSync(ks.kek_file);
    const err = await rejectsWithCode(open(ks), 'E_KEYSTORE_KEK');
    assert.ok(err.message.includes(ks.kek_file) && err.message.includes(ks.path), err.message);
    assert.match(err.message, /restore the KEK from backup/);
    assert.equal(existsSync(ks.kek_file), false, 'no stray KEK was written');
  });

  it('refuses a KEK owned by another user', asRoot, async () => {
    const ks = keystore();
    await (await open(ks)).close();
    chownSync(ks.kek_file, 65534, 65534);
    assert.match((await rejectsWithCode(open(ks), 'E_KEYSTORE_KEK')).message, /owned by uid 65534.*chown/);
  });

  it('close() wipes the KEK: no secret buffer of the manager outlives it', async () => {
    const own = plainAllocator();
    const km = await open(keystore(), own);
    assert.equal(own.stats().liveBuffers, 1, 'the KEK, and nothing else, is held while open');
    const key = await km.get(a, await km.createKey(a, { algorithm: 'aes', length: 512 }));
    assert.equal(key.bytes().length, 64);
    key.zeroize();
    await km.close();
    assert.equal(own.stats().liveBuffers, 0);
    await km.close();
  });

  it('with create_kek: false, refuses to invent a KEK for a missing file', async () => {
    const ks = keystore();
    await rejectsWithCode(open({ ...ks, create_kek: false }), 'E_KEYSTORE_KEK');
  });

  it('reads the KEK from a systemd credential ($CREDENTIALS_DIRECTORY)', async () => {
    const ks = keystore();
    const credentials = join(root, `creds-${randomUUID()}`);
    await (await open({ path: join(credentials, 'unused.db'), kek_file: join(credentials, 'kek') })).close();
    process.env['CREDENTIALS_DIRECTORY'] = credentials;
    try {
      const km = await open({ path: ks.path, kek_file: join(root, 'no-such-kek'), kek_credential: 'kek', create_kek: false });
      const id = await km.createKey(a, { algorithm: 'aes', length: 256 });
      assert.equal((await km.get(a, id)).bytes().length, 32);
      await km.close();
    } finally {
      delete process.env['CREDENTIALS_DIRECTORY'];
    }
    await rejectsWithCode(open({ path: ks.path, kek_credential: 'kek' }), 'E_KEYSTORE_KEK');
  });
});

describe('local keystore: tampering is an integrity error, never wrong bytes', () => {
  async function twoKeys() {
    const ks = keystore();
    const km = await open(ks);
    const one = await km.createKey(a, { algorithm: 'aes', length: 256, name: 'one' });
    const two = await km.createKey(a, { algorithm: 'aes', length: 256, name: 'two' });
    await km.close();
    return { ks, one, two };
  }

  it('a flipped byte in a sealed payload', async () => {
    const { ks, one, two } = await twoKeys();
    tamper(ks.path, (db) => {
      const row = db.prepare('SELECT sealed FROM objects WHERE id = ?').get(one) as { sealed: Buffer };
      row.sealed[3] = (row.sealed[3] ?? 0) ^ 0x01;
      db.prepare('UPDATE objects SET sealed = ? WHERE id = ?').run(row.sealed, one);
    });
    const km = await open(ks);
    await rejectsWithCode(km.get(a, one), 'E_KEYSTORE_INTEGRITY');
    await rejectsWithCode(km.get(a, one, { metadataOnly: true }), 'E_KEYSTORE_INTEGRITY');
    assert.equal((await km.get(a, two)).bytes().length, 32, 'the untouched row still reads');
    await km.close();
  });

  it('two rows with their payloads and nonces swapped', async () => {
    const { ks, one, two } = await twoKeys();
    tamper(ks.path, (db) => {
      const r1 = db.prepare('SELECT nonce, sealed FROM objects WHERE id = ?').get(one) as { nonce: Buffer; sealed: Buffer };
      const r2 = db.prepare('SELECT nonce, sealed FROM objects WHERE id = ?').get(two) as { nonce: Buffer; sealed: Buffer };
      const update = db.prepare('UPDATE objects SET nonce = ?, sealed = ? WHERE id = ?');
      update.run(r2.nonce, r2.sealed, one);
      update.run(r1.nonce, r1.sealed, two);
    });
    const km = await open(ks);
    await rejectsWithCode(km.get(a, one), 'E_KEYSTORE_INTEGRITY');
    await rejectsWithCode(km.get(a, two), 'E_KEYSTORE_INTEGRITY');
    await km.close();
  });

  it('a row moved to another project', async () => {
    const { ks, one } = await twoKeys();
    tamper(ks.path, (db) => db.prepare("UPDATE objects SET project = 'project-evil' WHERE id = ?").run(one));
    const km = await open(ks);
    await rejectsWithCode(km.get({ projectId: 'project-evil' }, one), 'E_KEYSTORE_INTEGRITY');
    await rejectsWithCode(km.get(a, one), 'E_KEY_NOT_FOUND');
    await km.close();
  });

  it('an edited name, algorithm, bit length or type, or a name given to an unnamed row', async () => {
    const ks = keystore();
    let km = await open(ks);
    const ids = await Promise.all([1, 2, 3, 4].map((n) => km.createKey(a, { algorithm: 'aes', length: 256, name: `k${n}` })));
    const unnamed = await km.createKey(a, { algorithm: 'aes', length: 256 });
    await km.close();
    const edits = ["name = 'renamed'", "algorithm = 'des'", 'bit_length = 128', "type = 'opaque'"];
    tamper(ks.path, (db) => {
      edits.forEach((edit, i) => db.prepare(`UPDATE objects SET ${edit} WHERE id = ?`).run(ids[i]));
      db.prepare("UPDATE objects SET name = 'named' WHERE id = ?").run(unnamed);
    });
    km = await open(ks);
    for (const id of [...ids, unnamed]) await rejectsWithCode(km.get(a, id), 'E_KEYSTORE_INTEGRITY');
    await km.close();
  });

  it('a row copied into another keystore under the same KEK', async () => {
    const { ks, one } = await twoKeys();
    const other = { ...keystore(), kek_file: ks.kek_file };
    await (await open(other)).close();
    tamper(other.path, (db) => {
      db.exec(`ATTACH DATABASE '${ks.path}' AS source`);
      db.prepare('INSERT INTO objects SELECT * FROM source.objects WHERE id = ?').run(one);
    });
    const km = await open(other);
    await rejectsWithCode(km.get(a, one), 'E_KEYSTORE_INTEGRITY');
    await km.close();
  });

  it('a keystore whose KEK check value was deleted', async () => {
    const { ks } = await twoKeys();
    tamper(ks.path, (db) => db.exec("DELETE FROM meta WHERE key = 'kek_check'"));
    await rejectsWithCode(open(ks), 'E_KEYSTORE_INTEGRITY');
  });
});

describe('local keystore: operations', () => {
  it('keeps a free UUID given with a stored object (so migrated volumes keep their key id), else makes a new one', async () => {
    const km = await open(keystore());
    const wanted = randomUUID();
    const make = () => objectOfType('symmetric', { id: wanted, algorithm: 'aes', bitLength: 256 }, adoptSecret(allocator, randomBytes(32)));
    assert.equal(await km.store(a, make()), wanted);
    const before = Buffer.from((await km.get(a, wanted)).bytes());
    const second = await km.store(a, make());
    assert.notEqual(second, wanted, 'an id in use is never overwritten');
    // Ids are per project: `key migrate` keeps nova's one fixed key id in every project it copies.
    const third = await km.store({ projectId: 'project-b' }, make());
    assert.equal(third, wanted, "another project's object under the same id is its own");
    assert.deepEqual(Buffer.from((await km.get(a, wanted)).bytes()), before, "project a's object is untouched");
    assert.notDeepEqual(Buffer.from((await km.get({ projectId: 'project-b' }, wanted)).bytes()), before);
    assert.notEqual(await km.store(a, objectOfType('opaque', { id: 'not-a-uuid' }, adoptSecret(allocator, Buffer.from('x')))), 'not-a-uuid');
    await km.close();
  });

  it('a keystore of schema version 1 (ids unique across projects) opens, is moved to version 2, and every key reads back', async () => {
    const ks = keystore();
    let km = await open(ks);
    const id = await km.createKey(a, { algorithm: 'aes', length: 256 });
    const bytes = Buffer.from((await km.get(a, id)).bytes());
    await km.close();
    // What portcullis 0.1 wrote: the same rows under `id TEXT PRIMARY KEY`, version 1.
    tamper(ks.path, (db) => {
      db.exec(`CREATE TABLE v1 (id TEXT PRIMARY KEY, project TEXT NOT NULL, type TEXT NOT NULL, name TEXT, algorithm TEXT,
        bit_length INTEGER, created TEXT NOT NULL, nonce BLOB NOT NULL, sealed BLOB NOT NULL);
        INSERT INTO v1 SELECT id, project, type, name, algorithm, bit_length, created, nonce, sealed FROM objects;
        DROP TABLE objects; ALTER TABLE v1 RENAME TO objects; UPDATE meta SET value = 1 WHERE key = 'schema_version';`);
    });
    km = await open(ks);
    assert.deepEqual(Buffer.from((await km.get(a, id)).bytes()), bytes);
    assert.equal(await km.store({ projectId: 'project-b' }, objectOfType('symmetric', { id, algorithm: 'aes', bitLength: 256 }, adoptSecret(allocator, randomBytes(32)))), id);
    await km.close();
    tamper(ks.path, (db) => assert.equal(Number((db.prepare("SELECT value FROM meta WHERE key = 'schema_version'").get() as { value: number }).value), 2));
  });

  it('store() refuses a metadata-only object with E_INVALID_ARGUMENT', async () => {
    const km = await open(keystore());
    const id = await km.createKey(a, { algorithm: 'aes', length: 256 });
    await rejectsWithCode(km.store(a, await km.get(a, id, { metadataOnly: true })), 'E_INVALID_ARGUMENT');
    await km.close();
  });

  it('createKeyPair() makes EC pairs too, and refuses lengths it does not know', async () => {
    const km = await open(keystore());
    const pair = await km.createKeyPair(a, { algorithm: 'ec', length: 384 });
    const priv = await km.get(a, pair.privateKeyId);
    assert.equal(createPrivateKey({ key: Buffer.from(priv.bytes()), format: 'der', type: 'pkcs8' }).asymmetricKeyDetails?.namedCurve, 'secp384r1');
    await rejectsWithCode(km.createKeyPair(a, { algorithm: 'rsa', length: 1024 }), 'E_INVALID_ARGUMENT');
    await rejectsWithCode(km.createKeyPair(a, { algorithm: 'ec', length: 255 }), 'E_INVALID_ARGUMENT');
    await km.close();
  });

  it('delete() leaves no trace of the sealed record in the database or its WAL (crypto-erase)', async () => {
    const ks = keystore();
    const km = await open(ks);
    const id = await km.createKey(a, { algorithm: 'aes', length: 256 });
    let sealed: Buffer = Buffer.alloc(0);
    tamper(ks.path, (db) => {
      sealed = (db.prepare('SELECT sealed FROM objects WHERE id = ?').get(id) as { sealed: Buffer }).sealed;
    });
    await km.delete(a, id);
    for (const file of [ks.path, `${ks.path}-wal`]) {
      if (existsSync(file)) assert.equal(readFileSync(file).indexOf(sealed), -1, `${file} still holds the sealed record`);
    }
    await km.close();
  });

  it('after close(), every operation fails cleanly with E_BACKEND_UNAVAILABLE', async () => {
    const km = await open(keystore());
    const id = await km.createKey(a, { algorithm: 'aes', length: 256 });
    await km.close();
    await rejectsWithCode(km.get(a, id), 'E_BACKEND_UNAVAILABLE');
    await rejectsWithCode(km.get(a, id, { metadataOnly: true }), 'E_BACKEND_UNAVAILABLE');
    await rejectsWithCode(km.createKey(a, { algorithm: 'aes', length: 256 }), 'E_BACKEND_UNAVAILABLE');
    await rejectsWithCode(km.delete(a, id), 'E_BACKEND_UNAVAILABLE');
    await rejectsWithCode(km.list(a), 'E_BACKEND_UNAVAILABLE');
    assert.equal((await km.health()).ok, false);
  });
});

interface Committed {
  id: string;
  digest: string;
}

/**
 * Runs `count` writer processes (test/fixtures/local-writer) on one keystore
 * and SIGKILLs each once it has reported `n` committed objects; resolves
 * when all have exited, with what each reported and how it ended.
 */
async function killWriters(ks: { path: string; kek_file: string }, count: number, n: number) {
  const writer = fileURLToPath(new URL('../../../fixtures/local-writer.js', import.meta.url));
  const runs = Array.from({ length: count }, () => {
    const child = spawn(process.execPath, [writer, ks.path, ks.kek_file], { stdio: ['ignore', 'pipe', 'inherit'] });
    const committed: Committed[] = [];
    let buffered = '';
    const exited = new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (chunk: Buffer) => {
        buffered += chunk.toString();
        const lines = buffered.split('\n');
        buffered = lines.pop() ?? '';
        for (const line of lines) {
          const [id, digest] = line.split(' ');
          if (id !== undefined && digest !== undefined) committed.push({ id, digest });
        }
        if (committed.length >= n && child.exitCode === null) child.kill('SIGKILL');
      });
      child.on('exit', () => resolve());
      child.on('error', reject);
    });
    return { child, committed, exited };
  });
  await Promise.all(runs.map((run) => run.exited));
  return runs.map(({ child, committed }) => ({ signal: child.signalCode, exitCode: child.exitCode, committed }));
}

async function assertAllReadBack(ks: { path: string; kek_file: string }, committed: Committed[]): Promise<void> {
  tamper(ks.path, (db) => assert.equal(db.pragma('integrity_check', { simple: true }), 'ok'));
  const km = await open(ks);
  for (const { id, digest } of committed) {
    const obj = await km.get({ projectId: 'writer' }, id);
    assert.equal(createHash('sha256').update(obj.bytes()).digest('hex'), digest, `object ${id} reads back intact`);
    obj.zeroize();
  }
  await km.close();
}

describe('local keystore: crash safety', () => {
  it('a writer killed with SIGKILL mid-write loses nothing it reported committed', async () => {
    const ks = keystore();
    await (await open(ks)).close(); // create KEK and schema first, so the child only writes objects
    const [run] = await killWriters(ks, 1, 200);
    assert.equal(run?.signal, 'SIGKILL', 'the writer was killed mid-run, not finished');
    assert.ok((run?.committed.length ?? 0) >= 200);
    await assertAllReadBack(ks, run?.committed ?? []);
  });

  it('two processes creating the same keystore at once agree on one KEK, and both write', async () => {
    const ks = keystore();
    const runs = await killWriters(ks, 2, 50);
    for (const run of runs) assert.equal(run.signal, 'SIGKILL', `a writer ended on its own (exit ${String(run.exitCode)}) instead of writing until killed`);
    assert.equal(statSync(ks.kek_file).size, 32);
    assert.deepEqual(readdirSync(ks.dir).filter((f) => f.endsWith('.tmp')), [], 'no temporary KEK is left behind');
    await assertAllReadBack(ks, runs.flatMap((run) => run.committed));
  });
});
