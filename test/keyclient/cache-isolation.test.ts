/**
 * Cache isolation: a key cached for project A is never served to project B
 * (or to another caller's token), whatever name the key is asked by. Through
 * the daemon's stack (openCachedKeyManager) against a real Barbican behind a
 * real Keystone, where Barbican itself is the judge of who may read what,
 * and against the local keystore, where the same key id can exist in two
 * projects with different bytes. test/keyclient/cache.test.ts checks the
 * cache keys themselves; this checks the answers.
 */
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { validateConfig } from '../../src/config/load.js';
import type { CachingKeyManager } from '../../src/keyclient/cache.js';
import type { RequestContext } from '../../src/keyclient/key-manager.js';
import { objectOfType } from '../../src/keyclient/objects/index.js';
import { openCachedKeyManager } from '../../src/keyclient/open.js';
import { plainAllocator } from '../../src/util/secure-memory.js';
import { startBarbican, type BarbicanServer } from '../fixtures/barbican-server.js';
import { startFaultProxy, type FaultProxy } from '../fixtures/fault-proxy.js';
import { startKeystone, type KeystoneServer } from '../fixtures/keystone-server.js';
import { rejectsWithCode } from '../helpers/errors.js';

const allocator = plainAllocator();
const dir = mkdtempSync(join(tmpdir(), 'portcullis-cache-isolation-'));
let keystone: KeystoneServer;
let barbican: BarbicanServer;
/** Used only as a recorder here: no faults are injected, every request passes. */
let tap: FaultProxy;
let a: RequestContext;
let b: RequestContext;

before(async () => {
  keystone = await startKeystone();
  barbican = await startBarbican({ pipeline: 'keystone', keystone });
  tap = await startFaultProxy(barbican.url);
  a = { projectId: keystone.projects.a.id };
  b = { projectId: keystone.projects.b.id };
});
after(async () => {
  await tap?.stop();
  await barbican?.stop();
  await keystone?.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** The daemon's stack on Barbican (through the recorder), portcullis' service user holding roles in A and B. */
function openBarbicanStack(): Promise<CachingKeyManager> {
  const user = keystone.users.portcullis;
  const auth = { type: 'password', auth_url: keystone.authUrl, username: user.name, password: user.password };
  const { config } = validateConfig({ key_manager: { backend: 'barbican', barbican: { endpoint: tap.url, timeout: 10, auth } }, cache: { sweep_interval_seconds: 0 } }, 'cache-isolation');
  return openCachedKeyManager(config, { allocator });
}

const hrefOf = (id: string) => `${barbican.url}/v1/secrets/${id}`;
const payloadGets = (id: string) => tap.attempts.filter((x) => x.method === 'GET' && x.path === `/v1/secrets/${id}/payload`).length;

describe('cache isolation on Barbican', () => {
  it("A's cached key is refused to B by bare id and by href, each time by Barbican itself; A's aliases are served from the cache", async () => {
    const km = await openBarbicanStack();
    try {
      const id = await km.createKey(a, { algorithm: 'aes', length: 256 });
      const key = Buffer.from((await km.get(a, id)).bytes());
      for (const asked of [id, hrefOf(id), `${hrefOf(id)}/`]) {
        const before = tap.attempts.length;
        await rejectsWithCode(km.get(b, asked), 'E_KEY_FORBIDDEN');
        assert.ok(tap.attempts.length > before, `B's request for ${asked} went to Barbican, not to A's entry`);
      }
      for (const asked of [hrefOf(id), id]) {
        const hit = await km.lookup(a, asked);
        assert.equal(hit.source, 'cache');
        assert.deepEqual(Buffer.from(hit.object.bytes()), key);
      }
      assert.equal(payloadGets(id), 1, 'only A ever received the payload');
    } finally {
      await km.close();
    }
  });

  it('B asking first (by href) is refused and remembered for B only: A then gets its key', async () => {
    const km = await openBarbicanStack();
    try {
      const id = await km.createKey(a, { algorithm: 'aes', length: 256 });
      await rejectsWithCode(km.get(b, hrefOf(id)), 'E_KEY_FORBIDDEN');
      await rejectsWithCode(km.get(b, hrefOf(id)), 'E_KEY_FORBIDDEN');
      assert.equal(km.stats().negativeHits, 1);
      assert.equal((await km.get(a, hrefOf(id))).bytes().length, 32);
      await rejectsWithCode(km.get(b, id), 'E_KEY_FORBIDDEN');
    } finally {
      await km.close();
    }
  });

  it('concurrent first gets from A and B do not share a fetch: A gets the key, B its refusal', async () => {
    const km = await openBarbicanStack();
    try {
      const id = await km.createKey(a, { algorithm: 'aes', length: 256 });
      const [fromA, fromB, aliasA, aliasB] = await Promise.allSettled([km.get(a, id), km.get(b, id), km.get(a, id), km.get(b, hrefOf(id))]);
      assert.equal(fromA.status, 'fulfilled');
      assert.equal(aliasA.status, 'fulfilled');
      for (const refused of [fromB, aliasB]) {
        assert.equal(refused.status, 'rejected');
        assert.equal((refused as PromiseRejectedResult).reason.code, 'E_KEY_FORBIDDEN');
      }
      assert.equal(km.stats().coalesced, 1, "only A's second get joined A's fetch");
    } finally {
      await km.close();
    }
  });

  it("a passed-through token is its own caller: A's cached key is not served to Bob's token or a garbage one, and Alice's token is asked for", async () => {
    const km = await openBarbicanStack();
    try {
      const id = await km.createKey(a, { algorithm: 'aes', length: 256 });
      const key = Buffer.from((await km.get(a, id)).bytes());
      const bob = await keystone.token(keystone.users.bob, keystone.projects.b.id);
      await rejectsWithCode(km.get({ ...a, token: bob }, id), 'E_KEY_FORBIDDEN');
      await rejectsWithCode(km.get({ ...a, token: 'garbage-token' }, hrefOf(id)), 'E_BACKEND_AUTH');
      const alice = await keystone.token(keystone.users.alice, keystone.projects.a.id);
      const asAlice = await km.lookup({ ...a, token: alice }, id);
      assert.equal(asAlice.source, 'backend');
      assert.deepEqual(Buffer.from(asAlice.object.bytes()), key);
    } finally {
      await km.close();
    }
  });
});

describe('cache isolation on the local keystore', () => {
  it('one key id in two projects with different bytes: each project gets its own, by id, however often asked', async () => {
    const { config } = validateConfig(
      { key_manager: { backend: 'local', local: { path: join(dir, 'keystore.db'), kek_file: join(dir, 'kek') } }, cache: { sweep_interval_seconds: 0 } },
      'cache-isolation',
    );
    const km = await openCachedKeyManager(config, { allocator });
    try {
      const id = randomUUID();
      const bytes = { a: randomBytes(32), b: randomBytes(32) };
      for (const [ctx, key] of [[a, bytes.a], [b, bytes.b]] as const) {
        const buf = allocator.alloc(32);
        buf.view().set(key);
        assert.equal(await km.store(ctx, objectOfType('symmetric', { id, algorithm: 'aes', bitLength: 256 }, buf)), id, 'the id was kept in each project');
      }
      for (let round = 0; round < 2; round += 1) {
        assert.deepEqual(Buffer.from((await km.get(a, id)).bytes()), bytes.a);
        assert.deepEqual(Buffer.from((await km.get(b, id)).bytes()), bytes.b);
      }
      assert.deepEqual([km.stats().misses, km.stats().hits], [2, 2]);
      await rejectsWithCode(km.get({ projectId: 'project-c' }, id), 'E_KEY_NOT_FOUND');
    } finally {
      await km.close();
    }
  });
});
