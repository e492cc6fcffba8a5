/**
 * The local keystore when its file system fails under it: full (a tiny
 * tmpfs, filled) and mounted read-only (remount,ro). Real mounts, so root
 * only; every mount is undone in after(), whatever happened.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { localBackend } from '../../../../src/keyclient/backends/local/backend.js';
import type { KeyManager } from '../../../../src/keyclient/key-manager.js';
import { objectOfType } from '../../../../src/keyclient/objects/index.js';
import { plainAllocator } from '../../../../src/util/secure-memory.js';
import { rejectsWithCode } from '../../../helpers/errors.js';
import { waitUntil } from '../../../helpers/wait.js';

const writer = fileURLToPath(new URL('../../../fixtures/local-writer.js', import.meta.url));

const asRoot = { skip: process.geteuid?.() === 0 ? false : 'needs root to mount a tmpfs' };
const allocator = plainAllocator();
const ctx = { projectId: 'fs-project' };
const root = mkdtempSync(join(tmpdir(), 'portcullis-keystore-fs-'));
const mounts: string[] = [];

after(() => {
  for (const mnt of mounts.splice(0).reverse()) {
    try {
      execFileSync('umount', [mnt], { stdio: 'pipe' });
    } catch {
      // Still busy (a test failed with the keystore open): detach it now, the kernel frees it when the last file closes.
      execFileSync('umount', ['-l', mnt], { stdio: 'pipe' });
    }
  }
  rmSync(root, { recursive: true, force: true });
});

/** A fresh tmpfs of `size` (mount's syntax: 64k, 1m); the KEK lives outside it, on the test's own disk. */
function tmpfs(name: string, size: string): { mnt: string; path: string; kek: string } {
  const mnt = join(root, name);
  mkdirSync(mnt);
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0700`, 'tmpfs', mnt], { stdio: 'pipe' });
  mounts.push(mnt);
  return { mnt, path: join(mnt, 'keystore.db'), kek: join(root, `${name}.kek`) };
}

const open = (fs: { path: string; kek: string }): Promise<KeyManager> => localBackend.create(localBackend.optionsSchema.parse({ path: fs.path, kek_file: fs.kek }), { allocator });
const remount = (mnt: string, options: string) => execFileSync('mount', ['-o', `remount,${options}`, mnt], { stdio: 'pipe' });
const bytesOf = async (km: KeyManager, id: string) => Buffer.from((await km.get(ctx, id)).bytes());
const detailsOf = (err: Error) => (err as unknown as { details: Record<string, unknown> }).details;

/** Writes 4 KiB blocks to a filler file until the file system is full; bounded by the tmpfs size. */
function fill(mnt: string): string {
  const filler = join(mnt, 'filler');
  const fd = openSync(filler, 'w');
  try {
    for (let i = 0; i < 1024; i += 1) writeSync(fd, Buffer.alloc(4096, 0x55));
    assert.fail(`${mnt} never filled up`);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
  } finally {
    closeSync(fd);
  }
  return filler;
}

/** SQLite's own check of every page and index: a keystore left corrupt by a failed write would fail it. */
function integrity(path: string): string {
  const db = new Database(path, { readonly: true, fileMustExist: true });
  try {
    return String(db.pragma('integrity_check', { simple: true }));
  } finally {
    db.close();
  }
}

describe('local keystore on a full file system', asRoot, () => {
  it('a keystore that does not fit (64k tmpfs) is E_BACKEND_UNAVAILABLE naming free space; with room, the same path opens whole', async () => {
    const fs = tmpfs('tiny', '64k');
    const err = await rejectsWithCode(open(fs), 'E_BACKEND_UNAVAILABLE');
    assert.equal(detailsOf(err)['sqlite'], 'SQLITE_FULL');
    assert.match(err.message, /check free space and the disk \(df, dmesg\)/);
    remount(fs.mnt, 'size=1m');
    const km = await open(fs);
    try {
      const id = await km.createKey(ctx, { algorithm: 'aes', length: 256 });
      assert.equal((await km.get(ctx, id)).bytes().length, 32);
    } finally {
      await km.close();
    }
    assert.equal(integrity(fs.path), 'ok');
  });

  it('when the disk fills up, create and store fail with E_BACKEND_UNAVAILABLE (SQLITE_FULL), existing keys are still served, nothing is corrupted', async () => {
    const fs = tmpfs('full', '256k');
    const km = await open(fs);
    try {
      const ids = [await km.createKey(ctx, { algorithm: 'aes', length: 256 }), await km.createKey(ctx, { algorithm: 'aes', length: 512 })];
      const keys = await Promise.all(ids.map((id) => bytesOf(km, id)));
      const filler = fill(fs.mnt);
      // The WAL may still have room from earlier writes: a few creates can succeed before SQLite needs a new page.
      let full: Error | undefined;
      for (let i = 0; i < 50 && full === undefined; i += 1) {
        full = await km.createKey(ctx, { algorithm: 'aes', length: 256 }).then(() => undefined, (e: Error) => e);
      }
      assert.ok(full !== undefined, 'a create failed once the disk was full');
      await rejectsWithCode(Promise.reject(full), 'E_BACKEND_UNAVAILABLE');
      assert.equal(detailsOf(full)['sqlite'], 'SQLITE_FULL');
      const buf = allocator.alloc(16);
      await rejectsWithCode(km.store(ctx, objectOfType('symmetric', { algorithm: 'aes', bitLength: 128 }, buf)), 'E_BACKEND_UNAVAILABLE');
      for (const [i, id] of ids.entries()) assert.deepEqual(await bytesOf(km, id), keys[i]);
      rmSync(filler);
      const later = await km.createKey(ctx, { algorithm: 'aes', length: 256 });
      assert.equal((await km.get(ctx, later)).bytes().length, 32);
    } finally {
      await km.close();
    }
    assert.equal(integrity(fs.path), 'ok');
  });
});

describe('local keystore on a read-only file system', asRoot, () => {
  it('serves every key it holds, refuses create and delete with E_KEYSTORE_FILE, and says so in health', async () => {
    const fs = tmpfs('ro', '256k');
    const writer = await open(fs);
    const ids = [await writer.createKey(ctx, { algorithm: 'aes', length: 256 }), await writer.createKey(ctx, { algorithm: 'aes', length: 512 })];
    const keys = await Promise.all(ids.map((id) => bytesOf(writer, id)));
    await writer.close();
    remount(fs.mnt, 'ro');
    const km = await open(fs);
    try {
      for (const [i, id] of ids.entries()) assert.deepEqual(await bytesOf(km, id), keys[i]);
      const created = await rejectsWithCode(km.createKey(ctx, { algorithm: 'aes', length: 256 }), 'E_KEYSTORE_FILE');
      assert.match(created.message, /mounted read-write/);
      await rejectsWithCode(km.delete(ctx, ids[0] as string), 'E_KEYSTORE_FILE');
      assert.deepEqual(await bytesOf(km, ids[0] as string), keys[0], 'the refused delete deleted nothing');
      const health = await km.health();
      assert.equal(health.ok, true);
      assert.match(health.detail, /2 object\(s\), read-only/);
    } finally {
      await km.close();
    }
    remount(fs.mnt, 'rw');
    const again = await open(fs);
    try {
      for (const [i, id] of ids.entries()) assert.deepEqual(await bytesOf(again, id), keys[i]);
      await again.createKey(ctx, { algorithm: 'aes', length: 256 });
    } finally {
      await again.close();
    }
    assert.equal(integrity(fs.path), 'ok');
  });

  it('a keystore left with commits in its WAL (writer killed) serves them from a read-only file system too', async () => {
    const fs = tmpfs('ro-wal', '2m');
    await (await open(fs)).close(); // KEK and schema first, so the writer only stores objects
    const child = spawn(process.execPath, [writer, fs.path, fs.kek], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
    try {
      await waitUntil('the writer committed 20 objects', () => out.split('\n').length > 20, { timeoutMs: 30_000, intervalMs: 20 });
    } finally {
      child.kill('SIGKILL');
      await exited;
    }
    const committed = out.split('\n').filter((l) => /^\S+ [0-9a-f]{64}$/.test(l)).map((l) => l.split(' ') as [string, string]);
    assert.ok(existsSync(`${fs.path}-wal`), 'the killed writer left its WAL');
    remount(fs.mnt, 'ro');
    const km = await open(fs);
    try {
      for (const [id, digest] of committed) {
        const bytes = (await km.get({ projectId: 'writer' }, id)).bytes();
        assert.equal(createHash('sha256').update(bytes).digest('hex'), digest, id);
      }
    } finally {
      await km.close();
    }
  });

  it('a new keystore on a read-only file system is E_KEYSTORE_FILE (EROFS), and nothing is left behind', async () => {
    const fs = tmpfs('ro-new', '256k');
    remount(fs.mnt, 'ro');
    const err = await rejectsWithCode(open(fs), 'E_KEYSTORE_FILE');
    assert.match(err.message, /cannot be created \(EROFS\)/);
    assert.equal(existsSync(fs.path), false);
  });
});
