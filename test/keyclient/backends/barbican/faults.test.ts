/**
 * The barbican backend when things go wrong: order polling, error mapping,
 * timeouts, TLS, and a server that stops. A real Barbican (noauth pipeline)
 * answers wherever it can; fakes (test/fixtures/servers/fakes.ts) stand in
 * only for what a real server cannot be made to do, and say so.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { barbicanBackend } from '../../../../src/keyclient/backends/barbican/backend.js';
import type { KeyManager, RequestContext } from '../../../../src/keyclient/key-manager.js';
import { objectOfType } from '../../../../src/keyclient/objects/index.js';
import { plainAllocator } from '../../../../src/util/secure-memory.js';
import { startBarbican, type BarbicanServer } from '../../../fixtures/barbican-server.js';
import { makeTestCa, startInterposer, startSilentServer, startTlsProxy, type Exchange } from '../../../fixtures/servers/fakes.js';
import { freePort } from '../../../fixtures/servers/process.js';
import { rejectsWithCode } from '../../../helpers/errors.js';
import { recordTimeouts } from '../../../helpers/timers.js';

const allocator = plainAllocator();
const a: RequestContext = { projectId: 'project-a' };
const b: RequestContext = { projectId: 'project-b' };
let barbican: BarbicanServer;
before(async () => (barbican = await startBarbican({ pipeline: 'noauth' })));
after(async () => barbican?.stop());

function openBarbican(options: Record<string, unknown>, now?: () => number): Promise<KeyManager> {
  return barbicanBackend.create(barbicanBackend.optionsSchema.parse(options), now ? { allocator, now } : { allocator });
}

const isOrderPoll = (e: Exchange) => e.method === 'GET' && /^\/v1\/orders\/[0-9a-f-]{36}$/.test(e.path);

/** FAKE in part: the real order, shown PENDING to the first `pendingPolls` polls. */
function pendingFor(pendingPolls: number) {
  let polls = 0;
  return {
    response(exchange: Exchange, answer: { status: number; headers: Record<string, string>; body: Buffer }) {
      if (!isOrderPoll(exchange)) return undefined;
      polls += 1;
      if (polls > pendingPolls) return undefined;
      const order = JSON.parse(answer.body.toString()) as Record<string, unknown>;
      delete order['secret_ref'];
      return { ...answer, body: JSON.stringify({ ...order, status: 'PENDING' }) };
    },
  };
}

describe('barbican order polling', () => {
  it('createKey() polls a PENDING order until it is ACTIVE, retry_delay apart', async () => {
    const proxy = await startInterposer(barbican.url, pendingFor(2));
    const km = await openBarbican({ endpoint: proxy.url, number_of_retries: 5, retry_delay: 0.1 });
    try {
      const timers = recordTimeouts();
      const id = await km.createKey(a, { algorithm: 'aes', length: 256 }).finally(() => timers.restore());
      // 100 ms is no other timer's delay here (the request timeout defaults to 30 s): these are the waits between polls.
      assert.deepEqual(timers.delays().filter((ms) => ms === 100), [100, 100], 'two waits of retry_delay, one before each poll after the first');
      assert.equal(proxy.exchanges.filter(isOrderPoll).length, 3);
      assert.equal((await km.get(a, id)).bytes().length, 32);
    } finally {
      await km.close();
      await proxy.stop();
    }
  });

  it('createKey() gives up with E_KEY_CREATE_FAILED after one poll plus number_of_retries', async () => {
    const proxy = await startInterposer(barbican.url, pendingFor(Infinity));
    const km = await openBarbican({ endpoint: proxy.url, number_of_retries: 2, retry_delay: 0.02 });
    const err = await rejectsWithCode(km.createKey(a, { algorithm: 'aes', length: 256 }), 'E_KEY_CREATE_FAILED');
    assert.match(err.message, /still PENDING after 3 polls/);
    assert.equal(proxy.exchanges.filter(isOrderPoll).length, 3);
    await km.close();
    await proxy.stop();
  });

  it('an order that Barbican fails ends in E_KEY_CREATE_FAILED with Barbican\'s status and reason', async () => {
    // The request is rewritten to a length Barbican accepts but cannot make; the failure itself is Barbican's own.
    const proxy = await startInterposer(barbican.url, {
      request: (e) => (e.method === 'POST' && e.path === '/v1/orders' ? Buffer.from(e.body.toString().replace('"bit_length":256', '"bit_length":384')) : undefined),
    });
    const km = await openBarbican({ endpoint: proxy.url, retry_delay: 0 });
    const err = await rejectsWithCode(km.createKey(a, { algorithm: 'aes', length: 256 }), 'E_KEY_CREATE_FAILED');
    assert.match(err.message, /ended in ERROR \(500\)/);
    await km.close();
    await proxy.stop();
  });
});

describe('barbican order follow-up failures', () => {
  it('a failure after Barbican accepted the order says requestSent: true, so a retrying wrapper does not order a second key', async () => {
    // FAKE: Barbican answers 503 to the poll, as it would while restarting between the two requests.
    const proxy = await startInterposer(barbican.url, { request: (e) => (isOrderPoll(e) ? { status: 503, headers: { 'retry-after': '1' } } : undefined) });
    const km = await openBarbican({ endpoint: proxy.url });
    const err = await rejectsWithCode(km.createKey(a, { algorithm: 'aes', length: 256 }), 'E_BACKEND_UNAVAILABLE');
    const details = (err as unknown as { details: Record<string, unknown> }).details;
    assert.equal(details['requestSent'], true);
    assert.equal(details['status'], undefined, 'no 503 status that would read as "not processed"');
    assert.match(err.message, /accepted order [0-9a-f-]{36}, then failed/);
    await km.close();
    await proxy.stop();
  });
});

describe('barbican error mapping', () => {
  let km: KeyManager;
  before(async () => (km = await openBarbican({ endpoint: barbican.url })));
  after(async () => km.close());

  it('Barbican\'s 403 for another project\'s secret is E_KEY_FORBIDDEN with the status', async () => {
    const id = await km.createKey(a, { algorithm: 'aes', length: 256 });
    const err = await rejectsWithCode(km.get(b, id), 'E_KEY_FORBIDDEN');
    assert.equal((err as unknown as { details: { status: number } }).details.status, 403);
  });

  it('404 is E_KEY_NOT_FOUND naming the id', async () => {
    const id = randomUUID();
    const err = await rejectsWithCode(km.get(a, id), 'E_KEY_NOT_FOUND');
    assert.match(err.message, new RegExp(id));
  });

  it('400 is E_INVALID_ARGUMENT carrying Barbican\'s reason', async () => {
    const buf = allocator.alloc(16);
    const err = await rejectsWithCode(km.store(a, objectOfType('symmetric', { algorithm: 'aes', bitLength: 0 }, buf)), 'E_INVALID_ARGUMENT');
    assert.match(err.message, /bit_length/);
  });

  it('a refused connection is E_BACKEND_UNAVAILABLE that says the request never reached the server', async () => {
    const url = `http://127.0.0.1:${await freePort()}`;
    const offline = await openBarbican({ endpoint: url });
    const err = await rejectsWithCode(offline.store(a, objectOfType('passphrase', {}, allocator.alloc(3))), 'E_BACKEND_UNAVAILABLE');
    assert.equal((err as unknown as { details: { requestSent: boolean } }).details.requestSent, false);
    assert.match(err.message, new RegExp(`${url} refused the connection \\(ECONNREFUSED\\); is Barbican running`));
    const health = await offline.health();
    assert.equal(health.ok, false);
    assert.match(health.detail, /ECONNREFUSED/);
    await offline.close();
  });

  it('a Barbican that stops is E_BACKEND_UNAVAILABLE, and the same manager works again once it is back', async () => {
    const own = await startBarbican({ pipeline: 'noauth' });
    const km2 = await openBarbican({ endpoint: own.url });
    const id = await km2.createKey(a, { algorithm: 'aes', length: 256 });
    const before = Buffer.from((await km2.get(a, id)).bytes());
    await own.kill();
    const err = await rejectsWithCode(km2.get(a, id), 'E_BACKEND_UNAVAILABLE');
    assert.equal((err as unknown as { details: { requestSent: boolean } }).details.requestSent, false);
    await own.restart();
    assert.deepEqual(Buffer.from((await km2.get(a, id)).bytes()), before);
    await km2.close();
    await own.stop();
  });

  it('503 and 429 are E_BACKEND_UNAVAILABLE with the status and Retry-After (seconds or HTTP date) in ms', async () => {
    const now = Date.parse('2030-01-01T00:00:00Z');
    // FAKE: a real Barbican cannot be made to answer 503/429 on demand.
    let answer = { status: 503, headers: { 'retry-after': '7' } as Record<string, string> };
    const proxy = await startInterposer(barbican.url, { request: () => ({ ...answer, body: '{"code": 503, "title": "Service Unavailable"}' }) });
    const km2 = await openBarbican({ endpoint: proxy.url }, () => now);
    const first = await rejectsWithCode(km2.get(a, randomUUID()), 'E_BACKEND_UNAVAILABLE');
    assert.deepEqual((first as unknown as { details: unknown }).details, { status: 503, requestSent: true, retryAfterMs: 7000 });
    answer = { status: 429, headers: { 'retry-after': new Date(now + 120_000).toUTCString() } };
    const second = await rejectsWithCode(km2.createKey(a, { algorithm: 'aes', length: 256 }), 'E_BACKEND_UNAVAILABLE');
    assert.deepEqual((second as unknown as { details: unknown }).details, { status: 429, requestSent: true, retryAfterMs: 120_000 });
    await km2.close();
    await proxy.stop();
  });

  it('an answer that is not Barbican\'s JSON is E_BACKEND_PROTOCOL', async () => {
    // FAKE: a misrouted endpoint (a web server's page instead of Barbican).
    const proxy = await startInterposer(barbican.url, { request: () => ({ status: 200, headers: { 'content-type': 'text/html' }, body: '<html>hello</html>' }) });
    const km2 = await openBarbican({ endpoint: proxy.url });
    await rejectsWithCode(km2.get(a, randomUUID()), 'E_BACKEND_PROTOCOL');
    await km2.close();
    await proxy.stop();
  });

  it('an error that quotes the stored payload is reported without it', async () => {
    // FAKE: a 400 whose reason echoes the request body, as a schema error on the payload would.
    const proxy = await startInterposer(barbican.url, { request: (e) => ({ status: 400, body: JSON.stringify({ code: 400, description: `bad: ${e.body.toString()}` }) }) });
    const km2 = await openBarbican({ endpoint: proxy.url });
    const key = Buffer.from('00112233445566778899aabbccddeeff', 'hex');
    const buf = allocator.alloc(16);
    buf.view().set(key);
    const err = await rejectsWithCode(km2.store(a, objectOfType('symmetric', {}, buf)), 'E_INVALID_ARGUMENT');
    assert.ok(!err.message.includes(key.toString('base64').slice(0, 12)), err.message);
    assert.match(err.message, /withheld/);
    await km2.close();
    await proxy.stop();
  });
});

describe('barbican timeouts', () => {
  it('a server that accepts but never answers is E_BACKEND_UNAVAILABLE after `timeout`, saying the request may have reached it', async () => {
    // FAKE: a hung server; a real one cannot be made to hang on demand.
    const silent = await startSilentServer();
    const km = await openBarbican({ endpoint: silent.url, timeout: 0.3 });
    try {
      const timers = recordTimeouts();
      const err = await rejectsWithCode(km.get(a, randomUUID()), 'E_BACKEND_UNAVAILABLE').finally(() => timers.restore());
      // What ended it: the client's own timer, armed with `timeout` (the silent server never answers nor closes).
      assert.deepEqual(timers.delays(), [300], 'one request, its timer armed with timeout: 0.3');
      assert.match(err.message, /did not answer within 0.3 s/);
      assert.equal(silent.connections(), 1, 'the request reached the server once');
      assert.equal((err as unknown as { details: { requestSent: boolean } }).details.requestSent, true);
      assert.equal((await km.health()).ok, false);
    } finally {
      await km.close();
      await silent.stop();
    }
  });
});

describe('barbican TLS', () => {
  let dir: string;
  let proxy: { url: string; stop(): Promise<void> };
  let caFile: string;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'portcullis-tls-'));
    const ca = makeTestCa(dir);
    caFile = ca.caFile;
    proxy = await startTlsProxy(barbican.url, ca);
  });
  after(async () => {
    await proxy.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('verifies the server against verify_ssl_path and works through it', async () => {
    const km = await openBarbican({ endpoint: proxy.url, verify_ssl_path: caFile });
    const id = await km.createKey(a, { algorithm: 'aes', length: 256 });
    assert.equal((await km.get(a, id)).bytes().length, 32);
    assert.equal((await km.health()).ok, true);
    await km.close();
  });

  it('refuses a certificate it cannot verify (verify_ssl on, no CA) before sending anything', async () => {
    const km = await openBarbican({ endpoint: proxy.url });
    const err = await rejectsWithCode(km.createKey(a, { algorithm: 'aes', length: 256 }), 'E_BACKEND_UNAVAILABLE');
    assert.deepEqual({ ...(err as unknown as { details: Record<string, unknown> }).details, errno: undefined }, { requestSent: false, tls: true, errno: undefined });
    assert.match(err.message, /could not be verified .*set verify_ssl_path/);
    await km.close();
  });

  it('skips verification with verify_ssl: false', async () => {
    const km = await openBarbican({ endpoint: proxy.url, verify_ssl: false });
    assert.equal((await km.list(a, { name: 'nothing-by-this-name' })).length, 0);
    await km.close();
  });

  it('an unreadable verify_ssl_path is E_INVALID_ARGUMENT when the backend is created', async () => {
    await rejectsWithCode(openBarbican({ endpoint: proxy.url, verify_ssl_path: join(dir, 'missing.pem') }), 'E_INVALID_ARGUMENT');
  });
});

describe('barbican under load', () => {
  // Barbican spends ~20 ms of Python per request under the GIL (~50 requests/s here), so this
  // checks that concurrency works (threaded server, client connection pool), not throughput.
  it('100 concurrent get()s of one key all return its bytes', async () => {
    const km = await openBarbican({ endpoint: barbican.url });
    const id = await km.createKey(a, { algorithm: 'aes', length: 256 });
    const expected = Buffer.from((await km.get(a, id)).bytes());
    const got = await Promise.all(Array.from({ length: 100 }, () => km.get(a, id)));
    assert.ok(got.every((key) => key.bytes().equals(expected)));
    await km.close();
  });
});
