/**
 * Answers a real Barbican cannot be made to give on cue — 500, 503 and 429
 * with Retry-After, a connection cut mid-body — from the fault proxy in front
 * of a real Barbican behind a real Keystone, through the stack the daemon
 * builds (cache(retry(barbican)) from a validated config).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { rejectsWithCode } from '../../../helpers/errors.js';
import { bytesOf, detailsOf, faultStackForFile, toPayload, toSecret, type FaultStack } from './fault-stack.js';

let s: FaultStack;
let ctx: FaultStack['ctx'];
faultStackForFile((started) => ((s = started), (ctx = started.ctx)));

describe('fault proxy: 500, 503, 429 and cut connections', () => {
  it('503 with Retry-After: 1 is retried after a wait of the second it asked for, and the get then succeeds', async () => {
    const id = await s.newKey();
    await s.usingStack({}, async (km) => {
      s.proxy.inject({ fault: { kind: 'status', status: 503, retryAfter: '1' }, match: (m, p) => m === 'GET' && p === `/v1/secrets/${id}`, times: 2 });
      assert.equal((await km.get(ctx, id)).bytes().length, 32);
      const seen = s.proxy.attempts.filter(toSecret(id));
      assert.deepEqual(seen.map((a) => a.outcome), [503, 503, 'passed']);
      assert.deepEqual(km.retryWaits, [1000, 1000], "each retry waited Barbican's Retry-After, not the 50 ms backoff");
    });
  });

  it('429 with Retry-After on an order is resent (the order was refused, not made) after the wait, and one key results', async () => {
    const km = await s.openStack();
    const isOrder = (a: { method: string; path: string }) => a.method === 'POST' && a.path === '/v1/orders';
    const before = s.proxy.attempts.filter(isOrder).length;
    try {
      s.proxy.inject({ fault: { kind: 'status', status: 429, retryAfter: '1' }, match: (m, p) => isOrder({ method: m, path: p }), times: 1 });
      const id = await km.createKey(ctx, { algorithm: 'aes', length: 256 });
      const seen = s.proxy.attempts.filter(isOrder).slice(before);
      assert.deepEqual(seen.map((a) => a.outcome), [429, 'passed']);
      assert.deepEqual(km.retryWaits, [1000], "the resend waited Barbican's Retry-After");
      assert.equal((await km.get(ctx, id)).bytes().length, 32);
    } finally {
      s.proxy.clear();
      await km.close();
    }
  });

  it('500 on a get is retried up to the attempts and then reported with the status; 500 on an order is never resent', async () => {
    const id = await s.newKey();
    const km = await s.openStack();
    const isOrder = (a: { method: string; path: string }) => a.method === 'POST' && a.path === '/v1/orders';
    try {
      s.proxy.inject({ fault: { kind: 'status', status: 500 }, match: (m) => m === 'GET' || m === 'POST' });
      const err = await rejectsWithCode(km.get(ctx, id), 'E_BACKEND_UNAVAILABLE');
      assert.deepEqual([detailsOf(err)['status'], detailsOf(err)['attempts']], [500, 3]);
      assert.equal(s.proxy.attempts.filter(toSecret(id)).length, 3);
      const orders = s.proxy.attempts.filter(isOrder).length;
      const created = await rejectsWithCode(km.createKey(ctx, { algorithm: 'aes', length: 256 }), 'E_BACKEND_UNAVAILABLE');
      assert.equal(detailsOf(created)['attempts'], 1, 'a 500 may mean the order was made: resending could make a second key');
      assert.equal(s.proxy.attempts.filter(isOrder).length, orders + 1);
    } finally {
      s.proxy.clear();
      await km.close();
    }
  });

  it('a payload cut off mid-body is E_BACKEND_UNAVAILABLE, retried, and the next whole answer is served', async () => {
    const id = await s.newKey();
    const expected = await bytesOf(s.direct, ctx, id);
    await s.usingStack({}, async (km) => {
      s.proxy.inject({ fault: { kind: 'cut', bytes: 10 }, match: (m, p) => m === 'GET' && p === `/v1/secrets/${id}/payload`, times: 1 });
      assert.deepEqual(await bytesOf(km, ctx, id), expected);
      assert.deepEqual(s.proxy.attempts.filter(toPayload(id)).map((a) => a.outcome), ['cut', 'passed']);
      await s.noneInFlight();
    });
  });

  it('a payload cut short where the cut looks like the end (no Content-Length, clean close) is never handed out as a shorter key', async () => {
    const id = await s.newKey();
    await s.usingStack({}, async (km) => {
      s.proxy.inject({ fault: { kind: 'cut', bytes: 16, framing: 'close' }, match: (m, p) => m === 'GET' && p === `/v1/secrets/${id}/payload` });
      const err = await rejectsWithCode(km.get(ctx, id), 'E_BACKEND_PROTOCOL');
      assert.match(err.message, /16 bytes for a 256-bit symmetric key/);
      assert.equal(km.stats().entries, 0, 'nothing was cached');
      s.proxy.clear();
      assert.equal((await km.get(ctx, id)).bytes().length, 32);
    });
  });

  it('metadata cut off on every attempt ends in E_BACKEND_UNAVAILABLE, not a hang or a protocol error', async () => {
    const id = await s.newKey();
    await s.usingStack({ barbican: { timeout: 30 } }, async (km) => {
      s.proxy.inject({ fault: { kind: 'cut', bytes: 20 }, match: (m, p) => m === 'GET' && p === `/v1/secrets/${id}` });
      const err = await rejectsWithCode(km.get(ctx, id), 'E_BACKEND_UNAVAILABLE');
      assert.equal(detailsOf(err)['attempts'], 3);
      assert.match(err.message, /closed the connection mid-request|mid-answer|ECONNRESET/);
      await s.noneInFlight();
    });
  });
});
