/**
 * The key cache in front of a real Barbican: what the daemon relies on when
 * many volumes of one tenant attach at once.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { barbicanBackend } from '../../src/keyclient/backends/barbican/backend.js';
import { cachingKeyManager, cacheOptionsSchema } from '../../src/keyclient/cache.js';
import type { KeyManager } from '../../src/keyclient/key-manager.js';
import { plainAllocator } from '../../src/util/secure-memory.js';
import { startBarbican, type BarbicanServer } from '../fixtures/barbican-server.js';
import { startInterposer } from '../fixtures/servers/fakes.js';
import { rejectsWithCode } from '../helpers/errors.js';

const allocator = plainAllocator();
const ctx = { projectId: 'cache-project' };
let barbican: BarbicanServer;
// A recording pass-through proxy: every HTTP exchange that reaches Barbican is counted.
let tap: Awaited<ReturnType<typeof startInterposer>>;
let direct: KeyManager;

before(async () => {
  barbican = await startBarbican({ pipeline: 'noauth' });
  tap = await startInterposer(barbican.url);
  direct = await barbicanBackend.create(barbicanBackend.optionsSchema.parse({ endpoint: barbican.url }), { allocator });
});
after(async () => {
  await direct?.close();
  await tap?.stop();
  await barbican?.stop();
});

async function cachedThroughTap(options: Record<string, unknown> = {}) {
  const inner = await barbicanBackend.create(barbicanBackend.optionsSchema.parse({ endpoint: tap.url, timeout: 5 }), { allocator });
  return cachingKeyManager(inner, cacheOptionsSchema.parse({ sweep_interval_seconds: 0, ...options }), { allocator });
}

const payloadFetches = (id: string) => tap.exchanges.filter((e) => e.method === 'GET' && e.path.includes(`/secrets/${id}/payload`)).length;
const secretRequests = (id: string) => tap.exchanges.filter((e) => e.path.includes(`/secrets/${id}`)).length;

describe('cache(barbican) against a real Barbican', () => {
  it('1,000 concurrent get()s of one uncached key make exactly one fetch from Barbican', async () => {
    const id = await direct.createKey(ctx, { algorithm: 'aes', length: 256, name: 'thundering-herd' });
    const expected = Buffer.from((await direct.get(ctx, id)).bytes());
    const cache = await cachedThroughTap();
    try {
      const results = await Promise.all(Array.from({ length: 1000 }, () => cache.get(ctx, id)));
      assert.equal(payloadFetches(id), 1, 'one payload GET reached Barbican');
      assert.equal(secretRequests(id), 2, 'one metadata GET and one payload GET, nothing else');
      const stats = cache.stats();
      assert.equal(stats.backendFetches, 1);
      assert.equal(stats.misses + stats.coalesced, 1000);
      for (const key of results) assert.deepEqual(Buffer.from(key.bytes()), expected);
      results[0]?.zeroize();
      assert.deepEqual(Buffer.from((results[1] as (typeof results)[number]).bytes()), expected, 'every caller owns its copy');
      // And later callers are served from memory.
      await cache.get(ctx, id);
      assert.equal(payloadFetches(id), 1);
    } finally {
      await cache.close();
    }
  });

  it('serves a cached key while Barbican is down, and fails fast with E_BACKEND_UNAVAILABLE for an uncached one', async () => {
    const cached = await direct.createKey(ctx, { algorithm: 'aes', length: 256 });
    const uncached = await direct.createKey(ctx, { algorithm: 'aes', length: 256 });
    const cache = await cachedThroughTap();
    try {
      const before = Buffer.from((await cache.get(ctx, cached)).bytes());
      await barbican.kill();
      assert.deepEqual(Buffer.from((await cache.get(ctx, cached)).bytes()), before);
      await rejectsWithCode(cache.get(ctx, uncached), 'E_BACKEND_UNAVAILABLE');
    } finally {
      await cache.close();
      await barbican.restart();
    }
  });

  it('wipes every cached key on close()', async () => {
    const id = await direct.createKey(ctx, { algorithm: 'aes', length: 256 });
    const cache = await cachedThroughTap();
    await cache.get(ctx, id);
    assert.equal(cache.stats().entries, 1);
    await cache.close();
    assert.equal(cache.stats().entries, 0);
  });
});
