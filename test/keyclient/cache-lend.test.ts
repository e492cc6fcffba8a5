import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { secureStats } from '../../native/index.js';
import { lockedAllocator } from '../../native/secure-allocator.js';
import { FIXED_KEY_ID, fixedBackend } from '../../src/keyclient/backends/fixed.js';
import { cacheOptionsSchema, cachingKeyManager } from '../../src/keyclient/cache.js';
import type { KeyManager, RequestContext } from '../../src/keyclient/key-manager.js';
import { plainAllocator, type SecureAllocator } from '../../src/util/secure-memory.js';
import { throwsWithCode } from '../helpers/errors.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const keyHex = randomBytes(64).toString('hex');
const keyBytes = Buffer.from(keyHex, 'hex');
const ctx: RequestContext = { projectId: 'project-1' };

/** The real fixed backend (its own allocator, so the cache's sees only the cache's buffers), its get()s counted. */
async function counted(): Promise<{ manager: KeyManager; gets: () => number }> {
  const inner = await fixedBackend.create(fixedBackend.optionsSchema.parse({ key: keyHex, allow_insecure: true }), { allocator: plainAllocator() });
  let gets = 0;
  return {
    manager: {
      ...inner,
      async get(c, id, options) {
        gets += 1;
        await new Promise((resolve) => setImmediate(resolve)); // a fetch takes a turn, so callers pile up on it
        return inner.get(c, id, options);
      },
    },
    gets: () => gets,
  };
}

async function open(allocator: SecureAllocator) {
  const backend = await counted();
  const cache = cachingKeyManager(backend.manager, cacheOptionsSchema.parse({ sweep_interval_seconds: 0 }), { allocator });
  return { cache, backend };
}

/** Collects and turns the event loop until `done` (lent views are finalized after a GC); bounded. */
async function settled(done: () => boolean): Promise<boolean> {
  for (let turn = 0; turn < 100 && !done(); turn++) {
    gc();
    await new Promise((resolve) => setImmediate(resolve));
  }
  return done();
}

describe('the key cache lends its bytes (withKey)', () => {
  it('withKey() in locked memory lends the cached bytes without allocating, and the lent buffer is detached after the callback', async () => {
    const allocator = lockedAllocator();
    const { cache } = await open(allocator);
    (await cache.get(ctx, FIXED_KEY_ID)).zeroize(); // cached
    const live = allocator.stats().liveBuffers;
    let kept: Buffer | undefined;
    const first = await cache.withKey(ctx, FIXED_KEY_ID, (key, source) => {
      kept = key.bytes();
      assert.equal(allocator.stats().liveBuffers, live, 'no copy was allocated for the callback');
      return [source, Buffer.from(kept).equals(keyBytes)] as const;
    });
    assert.deepEqual(first, ['cache', true]);
    assert.ok(kept !== undefined);
    assert.deepEqual([kept.length, kept[0]], [0, undefined], 'the lent buffer is unusable once the callback returned');
    assert.ok((await cache.get(ctx, FIXED_KEY_ID)).bytes().equals(keyBytes), 'the cached key itself is intact');
    await cache.close();
  });

  it('1,000 concurrent withKey() calls on an uncached key: one backend fetch, and every lent buffer is unusable afterwards', async () => {
    const allocator = lockedAllocator();
    const { cache, backend } = await open(allocator);
    const kept: Buffer[] = [];
    const sources = await Promise.all(
      Array.from({ length: 1000 }, () =>
        cache.withKey(ctx, FIXED_KEY_ID, async (key, source) => {
          kept.push(key.bytes());
          assert.ok(key.bytes().equals(keyBytes));
          await new Promise((resolve) => setImmediate(resolve)); // hold the lend across a turn
          return source;
        }),
      ),
    );
    assert.equal(backend.gets(), 1, 'single-flight holds for lends');
    assert.deepEqual([sources.filter((s) => s === 'backend').length, sources.filter((s) => s === 'coalesced').length], [1, 999]);
    assert.equal(kept.length, 1000);
    assert.ok(kept.every((buffer) => buffer.length === 0), 'every lent buffer was detached');
    await cache.close();
  });

  it('withKey() in plain memory lends a copy that is zeroed after the callback', async () => {
    const { cache } = await open(plainAllocator());
    let kept: Buffer | undefined;
    await cache.withKey(ctx, FIXED_KEY_ID, (key) => {
      kept = key.bytes();
      assert.ok(kept.equals(keyBytes));
    });
    assert.ok(kept !== undefined && kept.length === keyBytes.length && kept.every((byte) => byte === 0));
    await cache.close();
  });

  it('a callback that throws still gives the key back; the error is its own', async () => {
    const { cache } = await open(lockedAllocator());
    let kept: Buffer | undefined;
    let object: { zeroized: boolean; bytes(): Buffer } | undefined;
    await assert.rejects(
      cache.withKey(ctx, FIXED_KEY_ID, (key) => {
        kept = key.bytes();
        object = key;
        throw new Error('callback failed');
      }),
      { message: 'callback failed' },
    );
    assert.equal(kept?.length, 0);
    assert.equal(object?.zeroized, true);
    throwsWithCode(() => object?.bytes(), 'E_OBJECT_WIPED');
    await cache.close();
  });

  it('an entry evicted while lent is wiped only when the lend comes back: the callback reads the key to the end', async () => {
    const allocator = lockedAllocator();
    const { cache } = await open(allocator);
    const before = allocator.stats().liveBuffers;
    const read = await cache.withKey(ctx, FIXED_KEY_ID, async (key) => {
      assert.equal(cache.flush(), 1);
      assert.equal(allocator.stats().liveBuffers, before + 1, 'the flushed entry waits for its lend');
      await new Promise((resolve) => setImmediate(resolve));
      return Buffer.from(key.bytes());
    });
    assert.ok(read.equals(keyBytes));
    assert.equal(allocator.stats().liveBuffers, before, 'wiped once given back');
    await cache.close();
  });

  it('lookup({ lend: true }) lends until zeroize(); after many lends, gets and a close, no slot is left behind', async () => {
    assert.ok(await settled(() => secureStats().lentViews === 0 && secureStats().wipedAwaitingGc === 0), "earlier tests' buffers are finalized");
    const start = secureStats();
    const allocator = lockedAllocator();
    // In a function of its own, so that nothing refers to a lent view once it returns.
    await (async () => {
      const { cache } = await open(allocator);
      for (let i = 0; i < 1000; i++) {
        const { object } = await cache.lookup(ctx, FIXED_KEY_ID, { lend: true });
        assert.ok(object.bytes().equals(keyBytes));
        object.zeroize();
        await cache.withKey(ctx, FIXED_KEY_ID, (key) => key.bytes()[0]);
        (await cache.get(ctx, FIXED_KEY_ID)).zeroize();
      }
      await cache.close();
    })();
    assert.equal(allocator.stats().liveBuffers, 0, 'every buffer the cache allocated is wiped');
    assert.ok(await settled(() => secureStats().liveBuffers === start.liveBuffers && secureStats().lentViews === start.lentViews), 'every slot and view is gone');
    assert.equal(secureStats().lockedBytes, start.lockedBytes);
  });
});
