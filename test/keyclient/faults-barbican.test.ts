/**
 * Key-manager faults through the stack the daemon builds (openCachedKeyManager:
 * cache(retry(barbican)), from a validated config), against a real Barbican
 * behind a real Keystone. Outages a real server can have are made on it:
 * stopped and started again, SIGSTOPped. What it cannot be made to do on cue
 * (500/503/429 with Retry-After, a connection cut mid-body) comes from the
 * fault proxy in front of it (test/fixtures/fault-proxy.ts), which also
 * counts the attempts and the exchanges still open.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { validateConfig } from '../../src/config/load.js';
import type { CachingKeyManager } from '../../src/keyclient/cache.js';
import type { KeyManager, RequestContext } from '../../src/keyclient/key-manager.js';
import { openCachedKeyManager, openKeyManager } from '../../src/keyclient/open.js';
import { plainAllocator } from '../../src/keyclient/secure-memory.js';
import { startBarbican, type BarbicanServer } from '../fixtures/barbican-server.js';
import { startFaultProxy, type Attempt, type FaultProxy } from '../fixtures/fault-proxy.js';
import { startKeystone, type KeystoneServer } from '../fixtures/keystone-server.js';
import { rejectsWithCode } from '../helpers/errors.js';
import { waitUntil } from '../helpers/wait.js';

const allocator = plainAllocator();
let keystone: KeystoneServer;
let barbican: BarbicanServer;
let proxy: FaultProxy;
let direct: KeyManager;
let ctx: RequestContext;

function configFor(endpoint: string, extra: { cache?: object; retry?: object; barbican?: object } = {}) {
  const user = keystone.users.portcullis;
  return validateConfig(
    {
      key_manager: {
        backend: 'barbican',
        barbican: { endpoint, timeout: 2, auth: { type: 'password', auth_url: keystone.authUrl, username: user.name, password: user.password }, ...extra.barbican },
      },
      cache: { sweep_interval_seconds: 0, ...extra.cache },
      retry: { attempts: 3, base_delay_seconds: 0.05, max_delay_seconds: 5, ...extra.retry },
    },
    'faults-barbican.test',
  ).config;
}

/** The daemon's stack, talking to Barbican through the fault proxy. */
function openStack(extra: Parameters<typeof configFor>[1] = {}, now?: () => number): Promise<CachingKeyManager> {
  return openCachedKeyManager(configFor(proxy.url, extra), now === undefined ? { allocator } : { allocator, now });
}

before(async () => {
  keystone = await startKeystone();
  barbican = await startBarbican({ pipeline: 'keystone', keystone });
  proxy = await startFaultProxy(barbican.url);
  direct = await openKeyManager(configFor(barbican.url), { allocator });
  ctx = { projectId: keystone.projects.a.id };
});
after(async () => {
  await direct?.close();
  await proxy?.stop();
  await barbican?.stop();
  await keystone?.stop();
});

const newKey = () => direct.createKey(ctx, { algorithm: 'aes', length: 256 });
const bytesOf = async (km: KeyManager, id: string, c: RequestContext = ctx) => Buffer.from((await km.get(c, id)).bytes());
const toSecret = (id: string) => (a: Attempt) => a.method === 'GET' && a.path === `/v1/secrets/${id}`;
const toPayload = (id: string) => (a: Attempt) => a.method === 'GET' && a.path === `/v1/secrets/${id}/payload`;
const detailsOf = (err: Error) => (err as unknown as { details: Record<string, unknown> }).details;
/** Nothing the proxy received is still being worked on: every exchange answered or torn down. */
const noneInFlight = () => waitUntil('no exchange left open at the proxy', () => proxy.inFlight() === 0, { timeoutMs: 1000, intervalMs: 10, describe: () => `in flight: ${proxy.inFlight()}` });

describe('Barbican down (stopped, then started again)', () => {
  it('serves cached keys, fails uncached ones with E_BACKEND_UNAVAILABLE after the configured attempts, and recovers', async () => {
    const [cachedId, uncachedId] = [await newKey(), await newKey()];
    const km = await openStack();
    try {
      const cached = await bytesOf(km, cachedId);
      await barbican.kill();
      try {
        assert.deepEqual(await bytesOf(km, cachedId), cached);
        const err = await rejectsWithCode(km.get(ctx, uncachedId), 'E_BACKEND_UNAVAILABLE');
        assert.equal(detailsOf(err)['attempts'], 3);
        assert.equal(proxy.attempts.filter(toSecret(uncachedId)).length, 3, 'each attempt reached the proxy and no more');
        await noneInFlight();
      } finally {
        await barbican.restart();
      }
      assert.equal((await km.get(ctx, uncachedId)).bytes().length, 32, 'the same stack works once Barbican is back');
    } finally {
      await km.close();
    }
  });
});

describe('Barbican SIGSTOPped (slow beyond every timeout)', () => {
  it('serves cached keys; an uncached get times out per attempt, gives up after the attempts, and leaves nothing in flight', async () => {
    const [cachedId, uncachedId] = [await newKey(), await newKey()];
    const km = await openStack({ barbican: { timeout: 0.5 } });
    try {
      const cached = await bytesOf(km, cachedId);
      barbican.signal('SIGSTOP');
      try {
        assert.deepEqual(await bytesOf(km, cachedId), cached);
        const err = await rejectsWithCode(km.get(ctx, uncachedId), 'E_BACKEND_UNAVAILABLE');
        assert.match(err.message, /did not answer within 0.5 s/);
        assert.equal(detailsOf(err)['attempts'], 3);
        assert.equal(proxy.attempts.filter(toSecret(uncachedId)).length, 3);
        await noneInFlight();
      } finally {
        barbican.signal('SIGCONT');
      }
    } finally {
      await km.close();
    }
  });

  it('a get with a deadline rejects at the deadline, long before the 30 s request timeout, and its request is torn down', { timeout: 20_000 }, async () => {
    const id = await newKey();
    const km = await openStack({ barbican: { timeout: 30 } });
    try {
      barbican.signal('SIGSTOP');
      try {
        const deadline = AbortSignal.timeout(1000);
        const err = await rejectsWithCode(km.get({ ...ctx, signal: deadline }, id), 'E_BACKEND_UNAVAILABLE');
        assert.ok(deadline.aborted, 'it rejected because of the deadline, not before it');
        assert.equal(detailsOf(err)['deadline'], true);
        assert.equal(proxy.attempts.filter(toSecret(id)).length, 1, 'no retry started after the deadline');
        await noneInFlight();
      } finally {
        barbican.signal('SIGCONT');
      }
    } finally {
      await km.close();
    }
  });

  it('two callers share one fetch: the first deadline fails only its caller; the fetch is torn down when the last one leaves', { timeout: 20_000 }, async () => {
    const id = await newKey();
    const km = await openStack({ barbican: { timeout: 30 } });
    try {
      barbican.signal('SIGSTOP');
      try {
        const early = new AbortController();
        const late = new AbortController();
        const first = km.get({ ...ctx, signal: early.signal }, id);
        const second = km.get({ ...ctx, signal: late.signal }, id);
        await waitUntil('the shared fetch reached the proxy', () => proxy.inFlight() === 1, { timeoutMs: 5000, intervalMs: 10 });
        early.abort();
        await rejectsWithCode(first, 'E_BACKEND_UNAVAILABLE');
        assert.equal(proxy.inFlight(), 1, 'the second caller still waits on the fetch');
        late.abort();
        await rejectsWithCode(second, 'E_BACKEND_UNAVAILABLE');
        await noneInFlight();
        assert.equal(km.stats().coalesced, 1);
      } finally {
        barbican.signal('SIGCONT');
      }
    } finally {
      await km.close();
    }
  });
});

describe('stale-if-error against a real Barbican', () => {
  it('serves an expired key within stale_if_error_seconds while Barbican is down, and not after', async () => {
    const id = await newKey();
    let skew = 0;
    const km = await openStack({ cache: { ttl_seconds: 60, stale_if_error_seconds: 120 } }, () => Date.now() + skew);
    try {
      const key = await bytesOf(km, id);
      await barbican.kill();
      try {
        skew = 90_000; // expired, inside the window
        assert.deepEqual(await bytesOf(km, id), key);
        assert.equal(km.stats().staleServed, 1);
        skew = 200_000; // past ttl + window
        await rejectsWithCode(km.get(ctx, id), 'E_BACKEND_UNAVAILABLE');
        assert.equal(km.stats().entries, 0, 'the expired key was wiped');
      } finally {
        await barbican.restart();
      }
    } finally {
      await km.close();
    }
  });

  it('never serves stale after Barbican says the key is gone (404)', async () => {
    const id = await newKey();
    let skew = 0;
    const km = await openStack({ cache: { ttl_seconds: 60, stale_if_error_seconds: 120 } }, () => Date.now() + skew);
    try {
      await km.get(ctx, id);
      await direct.delete(ctx, id);
      skew = 90_000;
      await rejectsWithCode(km.get(ctx, id), 'E_KEY_NOT_FOUND');
      proxy.inject({ fault: { kind: 'status', status: 503 }, match: (_m, p) => p.startsWith(`/v1/secrets/${id}`) });
      skew = 100_000; // past the negative cache, still inside the stale window
      await rejectsWithCode(km.get(ctx, id), 'E_BACKEND_UNAVAILABLE');
      assert.equal(km.stats().staleServed, 0);
    } finally {
      proxy.clear();
      await km.close();
    }
  });
});

describe('fault proxy: 500, 503, 429 and cut connections', () => {
  it('503 with Retry-After: 1 is retried no sooner than a second later, and the get then succeeds', async () => {
    const id = await newKey();
    const km = await openStack();
    try {
      proxy.inject({ fault: { kind: 'status', status: 503, retryAfter: '1' }, match: (m, p) => m === 'GET' && p === `/v1/secrets/${id}`, times: 2 });
      assert.equal((await km.get(ctx, id)).bytes().length, 32);
      const seen = proxy.attempts.filter(toSecret(id));
      assert.deepEqual(seen.map((a) => a.outcome), [503, 503, 'passed']);
      assertSpacedBy(seen, 1000);
    } finally {
      proxy.clear();
      await km.close();
    }
  });

  it('429 with Retry-After on an order is resent (the order was refused, not made) after the wait, and one key results', async () => {
    const km = await openStack();
    const isOrder = (a: { method: string; path: string }) => a.method === 'POST' && a.path === '/v1/orders';
    const before = proxy.attempts.filter(isOrder).length;
    try {
      proxy.inject({ fault: { kind: 'status', status: 429, retryAfter: '1' }, match: (m, p) => isOrder({ method: m, path: p }), times: 1 });
      const id = await km.createKey(ctx, { algorithm: 'aes', length: 256 });
      const seen = proxy.attempts.filter(isOrder).slice(before);
      assert.deepEqual(seen.map((a) => a.outcome), [429, 'passed']);
      assertSpacedBy(seen, 1000);
      assert.equal((await km.get(ctx, id)).bytes().length, 32);
    } finally {
      proxy.clear();
      await km.close();
    }
  });

  it('500 on a get is retried up to the attempts and then reported with the status; 500 on an order is never resent', async () => {
    const id = await newKey();
    const km = await openStack();
    const isOrder = (a: { method: string; path: string }) => a.method === 'POST' && a.path === '/v1/orders';
    try {
      proxy.inject({ fault: { kind: 'status', status: 500 }, match: (m) => m === 'GET' || m === 'POST' });
      const err = await rejectsWithCode(km.get(ctx, id), 'E_BACKEND_UNAVAILABLE');
      assert.deepEqual([detailsOf(err)['status'], detailsOf(err)['attempts']], [500, 3]);
      assert.equal(proxy.attempts.filter(toSecret(id)).length, 3);
      const orders = proxy.attempts.filter(isOrder).length;
      const created = await rejectsWithCode(km.createKey(ctx, { algorithm: 'aes', length: 256 }), 'E_BACKEND_UNAVAILABLE');
      assert.equal(detailsOf(created)['attempts'], 1, 'a 500 may mean the order was made: resending could make a second key');
      assert.equal(proxy.attempts.filter(isOrder).length, orders + 1);
    } finally {
      proxy.clear();
      await km.close();
    }
  });

  it('a payload cut off mid-body is E_BACKEND_UNAVAILABLE, retried, and the next whole answer is served', async () => {
    const id = await newKey();
    const expected = await bytesOf(direct, id);
    const km = await openStack();
    try {
      proxy.inject({ fault: { kind: 'cut', bytes: 10 }, match: (m, p) => m === 'GET' && p === `/v1/secrets/${id}/payload`, times: 1 });
      assert.deepEqual(await bytesOf(km, id), expected);
      assert.deepEqual(proxy.attempts.filter(toPayload(id)).map((a) => a.outcome), ['cut', 'passed']);
      await noneInFlight();
    } finally {
      proxy.clear();
      await km.close();
    }
  });

  it('metadata cut off on every attempt ends in E_BACKEND_UNAVAILABLE, not a hang or a protocol error', async () => {
    const id = await newKey();
    const km = await openStack({ barbican: { timeout: 30 } });
    try {
      proxy.inject({ fault: { kind: 'cut', bytes: 20 }, match: (m, p) => m === 'GET' && p === `/v1/secrets/${id}` });
      const err = await rejectsWithCode(km.get(ctx, id), 'E_BACKEND_UNAVAILABLE');
      assert.equal(detailsOf(err)['attempts'], 3);
      assert.match(err.message, /closed the connection mid-request|mid-answer|ECONNRESET/);
      await noneInFlight();
    } finally {
      proxy.clear();
      await km.close();
    }
  });
});

/**
 * Each attempt came at least `ms` after the one before: an ordering check on
 * the times the proxy recorded, not a measure of speed. Timers fire on
 * libuv's millisecond clock, which may read up to 1 ms short of Date.now's.
 */
function assertSpacedBy(attempts: Attempt[], ms: number): void {
  for (let i = 1; i < attempts.length; i += 1) {
    const gap = (attempts[i] as Attempt).at - (attempts[i - 1] as Attempt).at;
    assert.ok(gap >= ms - 2, `attempt ${i + 1} came ${gap} ms after attempt ${i}; Retry-After asked for ${ms} ms`);
  }
}
