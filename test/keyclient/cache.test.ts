import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { FIXED_KEY_ID, fixedBackend } from '../../src/keyclient/backends/fixed.js';
import { cacheOptionsSchema, cachingKeyManager, latencyBucketsMs, type CachingKeyManager } from '../../src/keyclient/cache.js';
import type { KeyManager, RequestContext } from '../../src/keyclient/key-manager.js';
import { symmetricKey, type ManagedObject } from '../../src/keyclient/objects/index.js';
import { retryingKeyManager } from '../../src/keyclient/retry.js';
import { retryOptionsSchema } from '../../src/keyclient/retry.js';
import { plainAllocator, type SecretBuffer, type SecureAllocator } from '../../src/util/secure-memory.js';
import { rejectsWithCode, throwsWithCode } from '../helpers/errors.js';
import { faultyKeyManager, forbidden, notFound, unavailable, type FaultyKeyManager } from '../helpers/faulty-key-manager.js';
import { keyManagerContract } from './contract.js';

const keyHex = randomBytes(32).toString('hex');
const keyBytes = Buffer.from(keyHex, 'hex');
const p1: RequestContext = { projectId: 'project-1' };
const p2: RequestContext = { projectId: 'project-2' };
const p3: RequestContext = { projectId: 'project-3' };

function openFixed(): Promise<KeyManager> {
  // The backend gets its own allocator, so the cache's allocator sees only the cache's buffers.
  return fixedBackend.create(fixedBackend.optionsSchema.parse({ key: keyHex, allow_insecure: true }), { allocator: plainAllocator() });
}

function fakeClock(start = 1_700_000_000_000) {
  let t = start;
  return { now: () => t, advance: (ms: number) => void (t += ms) };
}

interface Allocation {
  buffer: SecretBuffer;
  /** The same memory as the buffer, kept to look at after wipe(). */
  bytes: Buffer;
}

/** The real plain allocator, remembering what it handed out so a test can look at the cache's own copy. */
function recordingAllocator(): SecureAllocator & { allocations: Allocation[] } {
  const real = plainAllocator();
  const allocations: Allocation[] = [];
  return {
    kind: 'recording',
    allocations,
    alloc(length) {
      const buffer = real.alloc(length);
      allocations.push({ buffer, bytes: buffer.view() });
      return buffer;
    },
    stats: () => real.stats(),
  };
}

function assertWipedToZero(allocation: Allocation | undefined): void {
  assert.ok(allocation !== undefined, 'the allocation was recorded');
  assert.equal(allocation.buffer.wiped, true, 'the buffer is marked wiped');
  assert.ok(allocation.bytes.every((byte) => byte === 0), 'every byte of the memory is zero');
}

/** Pass-through that counts what reaches the backend and can hold a get() (to stand in for latency). */
function counting(inner: KeyManager) {
  const gets: Array<{ projectId: string; id: string; metadataOnly: boolean }> = [];
  const counter = {
    gets,
    /** Runs inside each get() before the backend answers. */
    during: undefined as (() => Promise<void> | void) | undefined,
    manager: {
      ...inner,
      async get(ctx, id, options) {
        gets.push({ projectId: ctx.projectId, id, metadataOnly: options?.metadataOnly === true });
        await counter.during?.();
        return inner.get(ctx, id, options);
      },
    } satisfies KeyManager,
  };
  return counter;
}

interface Setup {
  cache: CachingKeyManager;
  clock: ReturnType<typeof fakeClock>;
  allocator: ReturnType<typeof recordingAllocator>;
  backend: ReturnType<typeof counting>;
  faults: FaultyKeyManager;
}

/** cache(counting(faulty(fixed))) with a fake clock; no sweep timer runs. */
async function setup(options: Record<string, unknown> = {}): Promise<Setup> {
  const clock = fakeClock();
  const allocator = recordingAllocator();
  const faults = faultyKeyManager(await openFixed());
  const backend = counting(faults);
  const cache = cachingKeyManager(backend.manager, cacheOptionsSchema.parse(options), { allocator, now: clock.now });
  return { cache, clock, allocator, backend, faults };
}

async function bytesOf(obj: Promise<ManagedObject>): Promise<Buffer> {
  return Buffer.from((await obj).bytes());
}

describe('cacheOptionsSchema', () => {
  it('fills the documented defaults', () => {
    assert.deepEqual(cacheOptionsSchema.parse({}), {
      ttl_seconds: 300,
      max_entries: 1024,
      negative_ttl_seconds: 5,
      stale_if_error_seconds: 0,
      sweep_interval_seconds: 30,
    });
  });

  it('rejects unknown keys and impossible values, each at its path', () => {
    const result = cacheOptionsSchema.safeParse({ ttl: 1, max_entries: 0, stale_if_error_seconds: -1, sweep_interval_seconds: 0.01 });
    assert.equal(result.success, false);
    const paths = result.error?.issues.map((i) => i.path.join('.') || i.message) ?? [];
    for (const path of ['max_entries', 'stale_if_error_seconds', 'sweep_interval_seconds']) assert.ok(paths.includes(path), path);
    assert.ok(result.error?.issues.some((i) => i.code === 'unrecognized_keys'));
  });
});

describe('cachingKeyManager()', () => {
  it('is named after what it wraps and passes non-get calls through', async () => {
    const { cache, backend } = await setup();
    assert.equal(cache.name, 'cache(fixed)');
    assert.equal(await cache.createKey(p1, { algorithm: 'aes', length: 256 }), FIXED_KEY_ID);
    assert.deepEqual((await cache.list(p1)).map((o) => o.id), [FIXED_KEY_ID]);
    assert.equal(backend.gets.length, 0);
    await cache.close();
  });

  it('get() serves hits until ttl_seconds pass, then asks the backend again', async () => {
    const { cache, clock, backend } = await setup({ ttl_seconds: 300 });
    assert.deepEqual(await bytesOf(cache.get(p1, FIXED_KEY_ID)), keyBytes);
    clock.advance(300_000 - 1);
    assert.deepEqual(await bytesOf(cache.get(p1, FIXED_KEY_ID)), keyBytes);
    assert.equal(backend.gets.length, 1, 'a hit just before expiry');
    clock.advance(1);
    assert.deepEqual(await bytesOf(cache.get(p1, FIXED_KEY_ID)), keyBytes);
    assert.equal(backend.gets.length, 2, 'a miss at expiry');
    const stats = cache.stats();
    assert.deepEqual([stats.hits, stats.misses, stats.expirations, stats.entries], [1, 2, 1, 1]);
    await cache.close();
  });

  it('get() gives every caller its own copy; zeroizing it leaves the cached key intact', async () => {
    const { cache, allocator } = await setup();
    const first = await cache.get(p1, FIXED_KEY_ID);
    const cached = allocator.allocations[0];
    first.zeroize();
    assert.equal(cached?.buffer.wiped, false);
    const second = await cache.get(p1, FIXED_KEY_ID);
    assert.deepEqual(Buffer.from(second.bytes()), keyBytes);
    assert.notEqual(second.bytes().buffer, cached?.bytes.buffer, 'the caller never holds the cache\'s memory');
    await cache.close();
  });

  it('get({metadataOnly}) is served from a full entry; a metadata-only miss is fetched, not cached', async () => {
    const { cache, backend } = await setup();
    await cache.get(p1, FIXED_KEY_ID, { metadataOnly: true });
    await cache.get(p1, FIXED_KEY_ID, { metadataOnly: true });
    assert.equal(backend.gets.length, 2);
    await cache.get(p1, FIXED_KEY_ID);
    const meta = await cache.get(p1, FIXED_KEY_ID, { metadataOnly: true });
    assert.equal(backend.gets.length, 3);
    assert.deepEqual(backend.gets.map((g) => g.metadataOnly), [true, true, false]);
    assert.equal(meta.metadataOnly, true);
    assert.equal(meta.id, FIXED_KEY_ID);
    throwsWithCode(() => meta.bytes(), 'E_METADATA_ONLY');
    await cache.close();
  });

  it('get() of an href and of its bare id share one entry', async () => {
    const { cache, backend } = await setup();
    await cache.get(p1, FIXED_KEY_ID);
    const viaHref = await cache.get(p1, `http://127.0.0.1:9311/v1/secrets/${FIXED_KEY_ID}`);
    assert.deepEqual(Buffer.from(viaHref.bytes()), keyBytes);
    assert.equal(backend.gets.length, 1);
    await cache.close();
  });

  it('get() of "x/UUID" is not an alias of UUID: it reaches the backend as given, and its refusal leaves the real entry', async () => {
    const { cache, backend } = await setup();
    await cache.get(p1, FIXED_KEY_ID);
    // The fixed backend knows only the bare id: anything else is E_KEY_NOT_FOUND from the backend itself.
    await rejectsWithCode(cache.get(p1, `x/${FIXED_KEY_ID}`), 'E_KEY_NOT_FOUND');
    assert.deepEqual(backend.gets.map((g) => g.id), [FIXED_KEY_ID, `x/${FIXED_KEY_ID}`]);
    const again = await cache.lookup(p1, FIXED_KEY_ID);
    assert.equal(again.source, 'cache', 'the real entry survived the failed lookup');
    assert.deepEqual(Buffer.from(again.object.bytes()), keyBytes);
    await cache.close();
  });

  it('a refusal of an href alias is remembered for that href only, never for the bare id', async () => {
    const { cache, faults } = await setup();
    faults.failNext('get', () => notFound());
    await rejectsWithCode(cache.get(p1, `http://other.example:9311/v1/secrets/${FIXED_KEY_ID}`), 'E_KEY_NOT_FOUND');
    const bare = await cache.lookup(p1, FIXED_KEY_ID);
    assert.equal(bare.source, 'backend', 'the bare id was not answered from the alias\'s remembered denial');
    await cache.close();
  });

  it('get() keeps entries apart per project and per passed-through token', async () => {
    const { cache, backend } = await setup();
    await cache.get(p1, FIXED_KEY_ID);
    await cache.get(p2, FIXED_KEY_ID);
    await cache.get({ ...p1, token: 'token-of-alice' }, FIXED_KEY_ID);
    await cache.get({ ...p1, token: 'token-of-bob' }, FIXED_KEY_ID);
    await cache.get({ ...p1, token: 'token-of-alice' }, FIXED_KEY_ID);
    assert.equal(backend.gets.length, 4);
    assert.equal(cache.stats().hits, 1);
    await cache.close();
  });

  it('get() at max_entries evicts the least recently used entry and wipes it', async () => {
    const { cache, allocator, backend } = await setup({ max_entries: 2 });
    await cache.get(p1, FIXED_KEY_ID);
    const p1Entry = allocator.allocations.length - 2; // the cache's copy, then the caller's
    await cache.get(p2, FIXED_KEY_ID);
    const p2Entry = allocator.allocations.length - 2;
    await cache.get(p1, FIXED_KEY_ID); // p1 is now more recently used than p2
    await cache.get(p3, FIXED_KEY_ID);
    assert.deepEqual([cache.stats().evictions, cache.stats().entries], [1, 2]);
    assertWipedToZero(allocator.allocations[p2Entry]);
    assert.equal(allocator.allocations[p1Entry]?.buffer.wiped, false);
    const before = backend.gets.length;
    await cache.get(p1, FIXED_KEY_ID);
    assert.equal(backend.gets.length, before, 'p1 survived');
    await cache.get(p2, FIXED_KEY_ID);
    assert.equal(backend.gets.length, before + 1, 'p2 was evicted');
    await cache.close();
  });

  it('a hit on the most recently used entry leaves the order as it is, and an entry inserted since is newer', async () => {
    // A hit on the newest entry skips moving it; an insert must make the inserted entry the newest.
    const { cache, backend } = await setup({ max_entries: 2 });
    for (const ctx of [p1, p2, p2, p1, p1]) await bytesOf(cache.get(ctx, FIXED_KEY_ID)); // order p2, p1
    await bytesOf(cache.get(p3, FIXED_KEY_ID)); // evicts p2: order p1, p3
    await bytesOf(cache.get(p1, FIXED_KEY_ID)); // a hit that must move p1 after p3
    await bytesOf(cache.get({ projectId: 'project-4' }, FIXED_KEY_ID)); // evicts p3
    const before = backend.gets.length;
    await bytesOf(cache.get(p1, FIXED_KEY_ID));
    assert.equal(backend.gets.length, before, 'p1 survived');
    await bytesOf(cache.get(p3, FIXED_KEY_ID));
    assert.equal(backend.gets.length, before + 1, 'p3 was evicted');
    assert.equal(cache.stats().evictions, 3);
    await cache.close();
  });

  it('1,000 concurrent get()s of an uncached key cause one backend fetch, and each caller gets its own copy', async () => {
    const { cache, backend } = await setup();
    const all = await Promise.all(Array.from({ length: 1000 }, () => cache.get(p1, FIXED_KEY_ID)));
    assert.equal(backend.gets.length, 1);
    const stats = cache.stats();
    assert.deepEqual([stats.misses, stats.coalesced, stats.backendFetches, stats.hits], [1, 999, 1, 0]);
    assert.equal(new Set(all.map((o) => o.bytes().buffer)).size, 1000, 'no two callers share memory');
    for (const obj of all) assert.deepEqual(Buffer.from(obj.bytes()), keyBytes);
    all[0]?.zeroize();
    assert.ok(all.slice(1).every((obj) => obj.bytes().equals(keyBytes)), 'zeroizing one copy leaves the others intact');
    assert.deepEqual(await bytesOf(cache.get(p1, FIXED_KEY_ID)), keyBytes);
    await cache.close();
  });

  it('concurrent get()s of a refused key share one fetch and the same error', async () => {
    const { cache, backend, faults } = await setup();
    const refusal = forbidden();
    faults.failNext('get', () => refusal);
    const results = await Promise.allSettled(Array.from({ length: 10 }, () => cache.get(p1, FIXED_KEY_ID)));
    assert.equal(backend.gets.length, 1);
    assert.ok(results.every((r) => r.status === 'rejected' && r.reason === refusal), 'the inner error, unchanged');
    await cache.close();
  });

  it('get() remembers not-found and forbidden for negative_ttl_seconds', async () => {
    const { cache, clock, backend, faults } = await setup({ negative_ttl_seconds: 5 });
    await rejectsWithCode(cache.get(p1, 'no-such-key'), 'E_KEY_NOT_FOUND'); // the fixed backend's own answer
    faults.failNext('get', forbidden);
    await rejectsWithCode(cache.get(p2, FIXED_KEY_ID), 'E_KEY_FORBIDDEN');
    clock.advance(4_999);
    await rejectsWithCode(cache.get(p1, 'no-such-key'), 'E_KEY_NOT_FOUND');
    await rejectsWithCode(cache.get(p2, FIXED_KEY_ID, { metadataOnly: true }), 'E_KEY_FORBIDDEN');
    assert.deepEqual([backend.gets.length, cache.stats().negativeHits], [2, 2]);
    clock.advance(1);
    await rejectsWithCode(cache.get(p1, 'no-such-key'), 'E_KEY_NOT_FOUND');
    assert.deepEqual(await bytesOf(cache.get(p2, FIXED_KEY_ID)), keyBytes, 'forbidden is forgotten after 5 s');
    assert.equal(backend.gets.length, 4);
    await cache.close();
  });

  it('get() with negative_ttl_seconds: 0 asks the backend every time', async () => {
    const { cache, backend } = await setup({ negative_ttl_seconds: 0 });
    await rejectsWithCode(cache.get(p1, 'no-such-key'), 'E_KEY_NOT_FOUND');
    await rejectsWithCode(cache.get(p1, 'no-such-key'), 'E_KEY_NOT_FOUND');
    assert.equal(backend.gets.length, 2);
    await cache.close();
  });

  describe('stale-if-error', () => {
    const window = { ttl_seconds: 300, stale_if_error_seconds: 60 };

    it('serves the expired key while the backend is unavailable, within stale_if_error_seconds', async () => {
      const { cache, clock, faults, allocator } = await setup(window);
      await cache.get(p1, FIXED_KEY_ID);
      faults.failAlways('get', unavailable);
      clock.advance(300_000 + 59_999);
      const concurrent = await Promise.all([cache.get(p1, FIXED_KEY_ID), cache.get(p1, FIXED_KEY_ID)]);
      for (const obj of concurrent) assert.deepEqual(Buffer.from(obj.bytes()), keyBytes);
      const meta = await cache.get(p1, FIXED_KEY_ID, { metadataOnly: true });
      assert.equal(meta.id, FIXED_KEY_ID);
      assert.equal(cache.stats().staleServed, 3);
      faults.heal();
      await cache.get(p1, FIXED_KEY_ID);
      assertWipedToZero(allocator.allocations[0]);
      assert.equal(cache.stats().entries, 1, 'the fresh key replaced the stale one');
      await cache.close();
    });

    it("at a caller's deadline serves the expired key within the window, and stops a fetch no one waits for any more", async () => {
      const clock = fakeClock();
      const backend = counting(await openFixed());
      const signals: AbortSignal[] = [];
      const watched: KeyManager = {
        ...backend.manager,
        get(ctx, id, o) {
          if (ctx.signal !== undefined) signals.push(ctx.signal);
          return backend.manager.get(ctx, id, o);
        },
      };
      const cache = cachingKeyManager(watched, cacheOptionsSchema.parse(window), { allocator: plainAllocator(), now: clock.now });
      await cache.get(p1, FIXED_KEY_ID);
      clock.advance(300_000 + 1);
      let release = () => {};
      backend.during = () => new Promise<void>((resolve) => (release = resolve)); // a backend that does not answer
      const deadline = new AbortController();
      const pending = cache.get({ ...p1, signal: deadline.signal }, FIXED_KEY_ID);
      await new Promise<void>((resolve) => setImmediate(resolve));
      const fetch = signals[1]; // signals[0] was the first, completed fetch's
      assert.equal(fetch?.aborted, false);
      deadline.abort();
      assert.deepEqual(await bytesOf(pending), keyBytes);
      assert.equal(cache.stats().staleServed, 1);
      assert.equal(fetch?.aborted, true, 'the fetch was told to stop: its only waiter left');
      backend.during = undefined;
      const late = new AbortController();
      late.abort();
      clock.advance(60_000);
      await rejectsWithCode(cache.get({ ...p1, signal: late.signal }, FIXED_KEY_ID), 'E_BACKEND_UNAVAILABLE');
      release();
      await cache.close();
    });

    it('refuses once the window has passed, and wipes the expired key', async () => {
      const { cache, clock, faults, allocator } = await setup(window);
      await cache.get(p1, FIXED_KEY_ID);
      faults.failAlways('get', unavailable);
      clock.advance(300_000 + 60_000);
      await rejectsWithCode(cache.get(p1, FIXED_KEY_ID), 'E_BACKEND_UNAVAILABLE');
      assertWipedToZero(allocator.allocations[0]);
      assert.deepEqual([cache.stats().staleServed, cache.stats().entries], [0, 0]);
      await cache.close();
    });

    for (const [code, fault] of [['E_KEY_FORBIDDEN', forbidden], ['E_KEY_NOT_FOUND', notFound]] as const) {
      it(`never serves stale after ${code}: the key is wiped and stays gone when the backend then fails`, async () => {
        const { cache, clock, faults, allocator } = await setup(window);
        await cache.get(p1, FIXED_KEY_ID);
        clock.advance(300_000);
        faults.failNext('get', fault);
        await rejectsWithCode(cache.get(p1, FIXED_KEY_ID), code);
        assertWipedToZero(allocator.allocations[0]);
        clock.advance(5_000); // past the negative entry
        faults.failAlways('get', unavailable);
        await rejectsWithCode(cache.get(p1, FIXED_KEY_ID), 'E_BACKEND_UNAVAILABLE');
        assert.equal(cache.stats().staleServed, 0);
        await cache.close();
      });
    }

    it('is off by default: an expired key is never served', async () => {
      const { cache, clock, faults } = await setup();
      await cache.get(p1, FIXED_KEY_ID);
      clock.advance(300_000);
      faults.failAlways('get', unavailable);
      await rejectsWithCode(cache.get(p1, FIXED_KEY_ID), 'E_BACKEND_UNAVAILABLE');
      await cache.close();
    });
  });

  describe('wiping', () => {
    async function cachedOne(options: Record<string, unknown> = {}) {
      const s = await setup(options);
      (await s.cache.get(p1, FIXED_KEY_ID)).zeroize();
      return { ...s, cached: s.allocator.allocations[0] };
    }

    it('sweep() wipes entries once expired past the stale window and counts them', async () => {
      const { cache, clock, cached } = await cachedOne({ stale_if_error_seconds: 10 });
      clock.advance(300_000);
      assert.equal(cache.sweep(), 0, 'inside the stale window the key is kept');
      clock.advance(10_000);
      assert.equal(cache.sweep(), 1);
      assertWipedToZero(cached);
      assert.deepEqual([cache.stats().expirations, cache.stats().entries], [1, 0]);
      await cache.close();
    });

    it('evict() wipes the entries of that id in every project', async () => {
      const { cache, allocator, cached } = await cachedOne();
      await cache.get(p2, FIXED_KEY_ID);
      assert.equal(cache.evict(FIXED_KEY_ID), 2);
      assertWipedToZero(cached);
      assertWipedToZero(allocator.allocations[2]);
      assert.equal(cache.evict(FIXED_KEY_ID), 0);
      await cache.close();
    });

    it('flush() wipes every entry', async () => {
      const { cache, cached } = await cachedOne();
      assert.equal(cache.flush(), 1);
      assertWipedToZero(cached);
      await cache.close();
    });

    it('delete() wipes the entry, then deletes in the backend', async () => {
      const { cache, cached, faults } = await cachedOne();
      await cache.delete(p1, FIXED_KEY_ID);
      assertWipedToZero(cached);
      assert.equal(faults.calls.delete, 1);
      await cache.close();
    });

    it('close() wipes every entry, closes the backend, is safe twice, and later get()s fail', async () => {
      const { cache, cached, faults } = await cachedOne();
      await cache.close();
      await cache.close();
      assertWipedToZero(cached);
      assert.equal((await faults.health()).ok, false, 'the fixed backend was closed');
      await rejectsWithCode(cache.get(p1, FIXED_KEY_ID), 'E_BACKEND_UNAVAILABLE');
    });

    it('a key fetched while evict() ran reaches its callers but is not cached', async () => {
      const { cache, backend, allocator } = await setup();
      let release!: () => void;
      backend.during = () => new Promise<void>((resolve) => (release = resolve));
      const pending = cache.get(p1, FIXED_KEY_ID);
      await new Promise<void>((resolve) => setImmediate(resolve));
      cache.evict(FIXED_KEY_ID);
      release();
      assert.deepEqual(await bytesOf(pending), keyBytes);
      assert.equal(cache.stats().entries, 0);
      assertWipedToZero(allocator.allocations[0]);
      await cache.close();
    });
  });

  it('stats() counts every path and keeps a cumulative backend latency histogram', async () => {
    const { cache, clock, backend, faults } = await setup({ max_entries: 2 });
    const latencies = [3, 40, 20_000];
    backend.during = () => clock.advance(latencies.shift() ?? 0);
    await cache.get(p1, FIXED_KEY_ID); // miss, 3 ms
    await cache.get(p2, FIXED_KEY_ID); // miss, 40 ms
    faults.failNext('get', notFound);
    await rejectsWithCode(cache.get(p3, FIXED_KEY_ID), 'E_KEY_NOT_FOUND'); // miss, 20 s
    await rejectsWithCode(cache.get(p3, FIXED_KEY_ID), 'E_KEY_NOT_FOUND'); // negative hit
    await cache.get(p1, FIXED_KEY_ID); // hit
    const stats = cache.stats();
    const { backendLatency, ...counts } = stats;
    assert.deepEqual(counts, {
      hits: 1, misses: 3, coalesced: 0, staleServed: 0, negativeHits: 1, evictions: 0, expirations: 0, entries: 2, backendFetches: 3,
    });
    assert.deepEqual(backendLatency.buckets.map((b) => b.le), [...latencyBucketsMs]);
    assert.deepEqual(backendLatency.buckets.map((b) => b.count), [0, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2]);
    assert.deepEqual([backendLatency.count, backendLatency.sum], [3, 20_043]);
    assert.doesNotThrow(() => JSON.stringify(stats), 'stats serialise for --json');
    await cache.close();
  });

  it('get() passes inner errors through unchanged', async () => {
    const { cache, faults } = await setup();
    const failure = unavailable({ requestSent: true, status: 502 });
    faults.failNext('get', () => failure);
    const caught = await rejectsWithCode(cache.get(p1, FIXED_KEY_ID), 'E_BACKEND_UNAVAILABLE');
    assert.equal(caught, failure);
    await cache.close();
  });

  it('store() of the fixed key passes through to the backend', async () => {
    const { cache, faults } = await setup();
    const buf = plainAllocator().alloc(32);
    buf.view().set(keyBytes);
    assert.equal(await cache.store(p1, symmetricKey({ algorithm: 'aes', bitLength: 256 }, buf)), FIXED_KEY_ID);
    assert.equal(faults.calls.store, 1);
    await cache.close();
  });
});

// The wrappers are KeyManagers: the daemon's stack, cache(retry(fixed)), keeps the backend's contract.
keyManagerContract({
  name: 'cache(retry(fixed))',
  open: async () =>
    cachingKeyManager(
      retryingKeyManager(await openFixed(), retryOptionsSchema.parse({}), { sleep: async () => {} }),
      cacheOptionsSchema.parse({ sweep_interval_seconds: 0 }),
      { allocator: plainAllocator() },
    ),
  projectA: () => ({ projectId: 'project-a' }),
  projectB: () => ({ projectId: 'project-b' }),
  fixedKeyId: FIXED_KEY_ID,
});
