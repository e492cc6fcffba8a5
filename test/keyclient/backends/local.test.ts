import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { localBackend } from '../../../src/keyclient/backends/local.js';
import type { KeyManager } from '../../../src/keyclient/key-manager.js';
import { objectOfType } from '../../../src/keyclient/objects/index.js';
import { adoptSecret, plainAllocator } from '../../../src/keyclient/secure-memory.js';
import { rejectsWithCode } from '../../helpers/errors.js';
import { keyManagerContract } from '../contract.js';

const root = mkdtempSync(join(tmpdir(), 'portcullis-local-'));
after(() => rmSync(root, { recursive: true, force: true }));
const allocator = plainAllocator();
const a = { projectId: 'project-a' };

/** A fresh keystore directory: db and KEK paths inside it. */
function keystore(name: string = randomUUID()) {
  const dir = join(root, name);
  return { dir, path: join(dir, 'keystore.db'), kek_file: join(dir, 'kek') };
}

function open(options: Record<string, unknown>): Promise<KeyManager> {
  const { dir: _dir, ...backendOptions } = options;
  return localBackend.create(localBackend.optionsSchema.parse(backendOptions), { allocator });
}

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
    assert.match(err.message, /does not match keystore/);
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

  it('an edited name, algorithm or bit length', async () => {
    const { ks, one, two } = await twoKeys();
    tamper(ks.path, (db) => {
      db.prepare("UPDATE objects SET name = 'renamed' WHERE id = ?").run(one);
      db.prepare('UPDATE objects SET bit_length = 128 WHERE id = ?').run(two);
    });
    const km = await open(ks);
    await rejectsWithCode(km.get(a, one), 'E_KEYSTORE_INTEGRITY');
    await rejectsWithCode(km.get(a, two), 'E_KEYSTORE_INTEGRITY');
    await km.close();
  });
});

describe('local keystore: ids', () => {
  it('keeps a free UUID given with a stored object (so migrated volumes keep their key id), else makes a new one', async () => {
    const km = await open(keystore());
    const wanted = randomUUID();
    const make = () => objectOfType('symmetric', { id: wanted, algorithm: 'aes', bitLength: 256 }, adoptSecret(allocator, randomBytes(32)));
    assert.equal(await km.store(a, make()), wanted);
    const second = await km.store(a, make());
    assert.notEqual(second, wanted, 'an id in use is never overwritten');
    assert.notEqual(await km.store(a, objectOfType('opaque', { id: 'not-a-uuid' }, adoptSecret(allocator, Buffer.from('x')))), 'not-a-uuid');
    await km.close();
  });

  it('after close(), every operation fails cleanly with E_BACKEND_UNAVAILABLE', async () => {
    const km = await open(keystore());
    const id = await km.createKey(a, { algorithm: 'aes', length: 256 });
    await km.close();
    await rejectsWithCode(km.get(a, id), 'E_BACKEND_UNAVAILABLE');
    await rejectsWithCode(km.list(a), 'E_BACKEND_UNAVAILABLE');
    assert.equal((await km.health()).ok, false);
  });
});

describe('local keystore: crash safety', () => {
  it('a writer killed with SIGKILL mid-write loses nothing it reported committed', async () => {
    const ks = keystore();
    await (await open(ks)).close(); // create KEK and schema first, so the child only writes objects
    const writer = fileURLToPath(new URL('../../fixtures/local-writer.js', import.meta.url));
    const child = spawn(process.execPath, [writer, ks.path, ks.kek_file], { stdio: ['ignore', 'pipe', 'inherit'] });
    const committed: Array<{ id: string; marker: string }> = [];
    let buffered = '';
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (chunk: Buffer) => {
        buffered += chunk.toString();
        const lines = buffered.split('\n');
        buffered = lines.pop() ?? '';
        for (const line of lines) {
          const [id, marker] = line.split(' ');
          if (id !== undefined && marker !== undefined) committed.push({ id, marker });
        }
        if (committed.length >= 200 && child.exitCode === null) child.kill('SIGKILL');
      });
      child.on('exit', () => resolve());
      child.on('error', reject);
    });
    assert.equal(child.signalCode, 'SIGKILL', 'the writer was killed mid-run, not finished');
    assert.ok(committed.length >= 200);
    tamper(ks.path, (db) => assert.equal((db.pragma('integrity_check', { simple: true }) as string), 'ok'));
    const km = await open(ks);
    const ctx = { projectId: 'writer' };
    for (const { id, marker } of committed) {
      const obj = await km.get(ctx, id);
      assert.equal(obj.bytes().subarray(0, 8).toString('hex'), marker, `object ${id} reads back intact`);
    }
    await km.close();
  });
});
