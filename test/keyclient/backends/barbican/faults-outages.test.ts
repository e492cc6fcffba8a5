/**
 * Key-manager outages through the stack the daemon builds (cache(retry(barbican))
 * from a validated config), made on a real Barbican behind a real Keystone:
 * stopped and started again, SIGSTOPped; with and without a caller's
 * deadline; and stale-if-error while it is down. The fault proxy in front
 * (test/fixtures/fault-proxy.ts) counts attempts and open exchanges, and once
 * stands for a Barbican that fails after it said 404.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { rejectsWithCode } from '../../../helpers/errors.js';
import { waitUntil } from '../../../helpers/wait.js';
import { bytesOf, detailsOf, faultStackForFile, toSecret, type FaultStack } from './fault-stack.js';

let s: FaultStack;
let ctx: FaultStack['ctx'];
faultStackForFile((started) => ((s = started), (ctx = started.ctx)));

describe('Barbican down (stopped, then started again)', () => {
  it('serves cached keys, fails uncached ones with E_BACKEND_UNAVAILABLE after the configured attempts, and recovers', async () => {
    const [cachedId, uncachedId] = [await s.newKey(), await s.newKey()];
    await s.usingStack({}, async (km) => {
      const cached = await bytesOf(km, ctx, cachedId);
      await s.barbican.kill();
      try {
        assert.deepEqual(await bytesOf(km, ctx, cachedId), cached);
        const err = await rejectsWithCode(km.get(ctx, uncachedId), 'E_BACKEND_UNAVAILABLE');
        assert.equal(detailsOf(err)['attempts'], 3);
        assert.equal(s.proxy.attempts.filter(toSecret(uncachedId)).length, 3, 'each attempt reached the proxy and no more');
        await s.noneInFlight();
      } finally {
        await s.barbican.restart();
      }
      assert.equal((await km.get(ctx, uncachedId)).bytes().length, 32, 'the same stack works once Barbican is back');
    });
  });
});

describe('Barbican SIGSTOPped (slow beyond every timeout)', () => {
  it('serves cached keys; an uncached get times out per attempt, gives up after the attempts, and leaves nothing in flight', async () => {
    const [cachedId, uncachedId] = [await s.newKey(), await s.newKey()];
    await s.usingStack({ barbican: { timeout: 0.5 } }, async (km) => {
      const cached = await bytesOf(km, ctx, cachedId);
      await s.whileStopped(async () => {
        assert.deepEqual(await bytesOf(km, ctx, cachedId), cached);
        const err = await rejectsWithCode(km.get(ctx, uncachedId), 'E_BACKEND_UNAVAILABLE');
        assert.match(err.message, /did not answer within 0.5 s/);
        assert.equal(detailsOf(err)['attempts'], 3);
        assert.equal(s.proxy.attempts.filter(toSecret(uncachedId)).length, 3);
        await s.noneInFlight();
      });
    });
  });

  it('a get with a deadline rejects at the deadline, not at the 30 s request timeout, and its request is torn down', async () => {
    const id = await s.newKey();
    await s.usingStack({ barbican: { timeout: 30 } }, async (km) => {
      await s.whileStopped(async () => {
        const deadline = AbortSignal.timeout(1000);
        const err = await rejectsWithCode(km.get({ ...ctx, signal: deadline }, id), 'E_BACKEND_UNAVAILABLE');
        assert.ok(deadline.aborted, 'it rejected because of the deadline, not before it');
        // What ended it: the deadline, not the request timeout (that error says "did not answer within 30 s").
        assert.equal(detailsOf(err)['deadline'], true);
        assert.match(err.message, /deadline passed; the request was abandoned/);
        assert.equal(s.proxy.attempts.filter(toSecret(id)).length, 1, 'no retry started after the deadline');
        await s.noneInFlight();
        await s.noConnections(); // a fresh stack: its one connection was the abandoned exchange's
      });
    });
  });

  it('two callers share one fetch: the first deadline fails only its caller; the fetch is torn down when the last one leaves', async () => {
    const id = await s.newKey();
    await s.usingStack({ barbican: { timeout: 30 } }, async (km) => {
      await s.whileStopped(async () => {
        const early = new AbortController();
        const late = new AbortController();
        const first = km.get({ ...ctx, signal: early.signal }, id);
        const second = km.get({ ...ctx, signal: late.signal }, id);
        await waitUntil('the shared fetch reached the proxy', () => s.proxy.inFlight() === 1, { timeoutMs: 5000, intervalMs: 10 });
        early.abort();
        assert.equal(detailsOf(await rejectsWithCode(first, 'E_BACKEND_UNAVAILABLE'))['deadline'], true, 'its deadline ended the first caller');
        assert.equal(s.proxy.inFlight(), 1, 'the second caller still waits on the fetch');
        late.abort();
        assert.equal(detailsOf(await rejectsWithCode(second, 'E_BACKEND_UNAVAILABLE'))['deadline'], true, 'its deadline ended the second caller');
        await s.noneInFlight();
        await s.noConnections();
        assert.equal(km.stats().coalesced, 1);
      });
    });
  });
});

describe('stale-if-error against a real Barbican', () => {
  it('serves an expired key within stale_if_error_seconds while Barbican is down, and not after', async () => {
    const id = await s.newKey();
    let skew = 0;
    await s.usingStack({ cache: { ttl_seconds: 60, stale_if_error_seconds: 120 } }, async (km) => {
      const key = await bytesOf(km, ctx, id);
      await s.barbican.kill();
      try {
        skew = 90_000; // expired, inside the window
        assert.deepEqual(await bytesOf(km, ctx, id), key);
        assert.equal(km.stats().staleServed, 1);
        skew = 200_000; // past ttl + window
        await rejectsWithCode(km.get(ctx, id), 'E_BACKEND_UNAVAILABLE');
        assert.equal(km.stats().entries, 0, 'the expired key was wiped');
      } finally {
        await s.barbican.restart();
      }
    }, () => Date.now() + skew);
  });

  it('never serves stale after Barbican says the key is gone (404)', async () => {
    const id = await s.newKey();
    let skew = 0;
    await s.usingStack({ cache: { ttl_seconds: 60, stale_if_error_seconds: 120 } }, async (km) => {
      await km.get(ctx, id);
      await s.direct.delete(ctx, id);
      skew = 90_000;
      await rejectsWithCode(km.get(ctx, id), 'E_KEY_NOT_FOUND');
      s.proxy.inject({ fault: { kind: 'status', status: 503 }, match: (_m, p) => p.startsWith(`/v1/secrets/${id}`) });
      skew = 100_000; // past the negative cache, still inside the stale window
      await rejectsWithCode(km.get(ctx, id), 'E_BACKEND_UNAVAILABLE');
      assert.equal(km.stats().staleServed, 0);
    }, () => Date.now() + skew);
  });
});
