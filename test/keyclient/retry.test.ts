import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FIXED_KEY_ID, fixedBackend } from '../../src/keyclient/backends/fixed.js';
import { keyError, KeyClientError } from '../../src/keyclient/errors.js';
import type { KeyManager, RequestContext } from '../../src/keyclient/key-manager.js';
import { symmetricKey } from '../../src/keyclient/objects/index.js';
import { retryingKeyManager, retryOptionsSchema } from '../../src/keyclient/retry.js';
import { plainAllocator } from '../../src/util/secure-memory.js';
import { rejectsWithCode } from '../helpers/errors.js';
import { faultyKeyManager, forbidden, notFound, unavailable, type FaultyKeyManager, type Operation } from '../helpers/faulty-key-manager.js';

const key = 'cd'.repeat(32);
const ctx: RequestContext = { projectId: 'project-1' };

interface Setup {
  km: KeyManager;
  faults: FaultyKeyManager;
  /** Every wait the wrapper asked for, in ms; the fake sleep returns at once. */
  slept: number[];
}

/** retry(faulty(fixed)) with a fake sleep and, unless given, jitter off. */
async function setup(options: Record<string, unknown> = {}, random?: () => number): Promise<Setup> {
  const fixed = await fixedBackend.create(fixedBackend.optionsSchema.parse({ key, allow_insecure: true }), { allocator: plainAllocator() });
  const faults = faultyKeyManager(fixed);
  const slept: number[] = [];
  const km = retryingKeyManager(faults, retryOptionsSchema.parse({ jitter: false, ...options }), {
    sleep: async (ms) => void slept.push(ms),
    ...(random === undefined ? {} : { random }),
  });
  return { km, faults, slept };
}

/** The fixed backend's own key, for store(). */
function ownKey() {
  const buf = plainAllocator().alloc(32);
  buf.view().fill(0xcd);
  return symmetricKey({ algorithm: 'aes', bitLength: 256 }, buf);
}

const calls: Record<Operation, (km: KeyManager) => Promise<unknown>> = {
  createKey: (km) => km.createKey(ctx, { algorithm: 'aes', length: 256 }),
  createKeyPair: (km) => km.createKeyPair(ctx, { algorithm: 'rsa', length: 2048 }),
  store: (km) => km.store(ctx, ownKey()),
  get: (km) => km.get(ctx, FIXED_KEY_ID),
  delete: (km) => km.delete(ctx, FIXED_KEY_ID),
  list: (km) => km.list(ctx),
  health: (km) => km.health(),
};

describe('retryOptionsSchema', () => {
  it('fills the documented defaults', () => {
    assert.deepEqual(retryOptionsSchema.parse({}), { attempts: 4, base_delay_seconds: 0.2, max_delay_seconds: 10, jitter: true });
  });

  it('rejects unknown keys, zero attempts and a ceiling below the base delay', () => {
    assert.equal(retryOptionsSchema.safeParse({ retries: 3 }).success, false);
    assert.equal(retryOptionsSchema.safeParse({ attempts: 0 }).success, false);
    const result = retryOptionsSchema.safeParse({ base_delay_seconds: 5, max_delay_seconds: 1 });
    assert.deepEqual(result.error?.issues.map((i) => i.path.join('.')), ['max_delay_seconds']);
  });
});

describe('retryingKeyManager()', () => {
  it('is named after what it wraps', async () => {
    const { km } = await setup();
    assert.equal(km.name, 'retry(fixed)');
    await km.close();
  });

  it('get() retries E_BACKEND_UNAVAILABLE with exponential backoff until it succeeds', async () => {
    const { km, faults, slept } = await setup();
    faults.failNext('get', unavailable, 3);
    const got = await km.get(ctx, FIXED_KEY_ID);
    assert.equal(got.bytes().toString('hex'), key);
    assert.equal(faults.calls.get, 4);
    assert.deepEqual(slept, [200, 400, 800]);
    await km.close();
  });

  it('never waits longer than max_delay_seconds', async () => {
    const { km, faults, slept } = await setup({ attempts: 8, base_delay_seconds: 1, max_delay_seconds: 5 });
    faults.failAlways('get', unavailable);
    await rejectsWithCode(km.get(ctx, FIXED_KEY_ID), 'E_BACKEND_UNAVAILABLE');
    assert.deepEqual(slept, [1000, 2000, 4000, 5000, 5000, 5000, 5000]);
    await km.close();
  });

  it('with jitter waits random() times the backoff (full jitter)', async () => {
    const draws = [0.5, 0.25, 0];
    const { km, faults, slept } = await setup({ jitter: true }, () => draws.shift() ?? 0);
    faults.failNext('get', unavailable, 3);
    await km.get(ctx, FIXED_KEY_ID);
    assert.deepEqual(slept, [100, 100, 0]);
    await km.close();
  });

  it('honours Retry-After instead of the backoff, capped by max_delay_seconds', async () => {
    const { km, faults, slept } = await setup();
    faults.failNext('get', () => unavailable({ requestSent: true, status: 503, retryAfterMs: 3_000 }));
    faults.failNext('get', () => unavailable({ requestSent: true, status: 429, retryAfterMs: 3_600_000 }));
    await km.get(ctx, FIXED_KEY_ID);
    assert.deepEqual(slept, [3_000, 10_000]);
    await km.close();
  });

  it('after the last attempt rethrows the failure with details.attempts, the original as cause and untouched', async () => {
    const { km, faults } = await setup();
    const last = unavailable({ requestSent: true, status: 502 });
    faults.failNext('get', unavailable, 3);
    faults.failNext('get', () => last);
    const err = await rejectsWithCode(km.get(ctx, FIXED_KEY_ID), 'E_BACKEND_UNAVAILABLE');
    assert.ok(err instanceof KeyClientError);
    assert.deepEqual(err.details, { requestSent: true, status: 502, attempts: 4 });
    assert.equal(err.cause, last);
    assert.match(err.message, /gave up after 4 attempts/);
    assert.deepEqual(last.details, { requestSent: true, status: 502 }, 'the original is not mutated');
    await km.close();
  });

  it('never retries other errors and passes them through unchanged', async () => {
    const { km, faults, slept } = await setup();
    await rejectsWithCode(km.get(ctx, 'no-such-key'), 'E_KEY_NOT_FOUND'); // the fixed backend's own answer
    for (const make of [forbidden, () => keyError('E_BACKEND_AUTH', 'Injected: 401'), () => keyError('E_BACKEND_PROTOCOL', 'Injected')]) {
      const failure = make();
      faults.failNext('get', () => failure);
      assert.equal(await km.get(ctx, FIXED_KEY_ID).catch((e: unknown) => e), failure);
    }
    assert.equal(faults.calls.get, 4);
    assert.deepEqual(slept, []);
    await km.close();
  });

  for (const op of ['createKey', 'createKeyPair', 'store'] as const) {
    it(`${op}() is not retried when the request may have reached the server`, async () => {
      const { km, faults, slept } = await setup();
      for (const details of [{ requestSent: true, errno: 'ETIMEDOUT' }, { requestSent: true, status: 500 }, { requestSent: true, status: 502 }]) {
        faults.failNext(op, () => unavailable(details));
        const err = await rejectsWithCode(calls[op](km), 'E_BACKEND_UNAVAILABLE');
        assert.equal((err as KeyClientError).details['attempts'], 1);
      }
      assert.equal(faults.calls[op], 3);
      assert.deepEqual(slept, []);
      await km.close();
    });

    it(`${op}() is retried when the connection never came up, or after 429 or 503`, async () => {
      const { km, faults, slept } = await setup();
      faults.failNext(op, () => unavailable({ requestSent: false, errno: 'ECONNREFUSED' }));
      faults.failNext(op, () => unavailable({ requestSent: true, status: 429 }));
      faults.failNext(op, () => unavailable({ requestSent: true, status: 503 }));
      // The fixed backend refuses key pairs, so that call ends in its own E_NOT_SUPPORTED: still, it got through.
      await (op === 'createKeyPair' ? rejectsWithCode(calls[op](km), 'E_NOT_SUPPORTED') : calls[op](km));
      assert.equal(faults.calls[op], 4);
      assert.deepEqual(slept, [200, 400, 800]);
      await km.close();
    });
  }

  for (const op of ['get', 'list', 'delete', 'health'] as const) {
    it(`${op}() is retried on any E_BACKEND_UNAVAILABLE, even after the request was sent`, async () => {
      const { km, faults, slept } = await setup();
      faults.failNext(op, () => unavailable({ requestSent: true, status: 500 }), 3);
      await calls[op](km);
      assert.equal(faults.calls[op], 4);
      assert.equal(slept.length, 3);
      await km.close();
    });
  }

  it('attempts: 1 turns retrying off', async () => {
    const { km, faults, slept } = await setup({ attempts: 1 });
    faults.failNext('get', unavailable);
    const err = await rejectsWithCode(km.get(ctx, FIXED_KEY_ID), 'E_BACKEND_UNAVAILABLE');
    assert.equal((err as KeyClientError).details['attempts'], 1);
    assert.deepEqual([faults.calls.get, slept.length], [1, 0]);
    await km.close();
  });

  it('close() ends a retry wait, closes the backend once and is safe twice', async () => {
    const fixed = await fixedBackend.create(fixedBackend.optionsSchema.parse({ key, allow_insecure: true }), { allocator: plainAllocator() });
    const faults = faultyKeyManager(fixed);
    let closes = 0;
    const counted: KeyManager = {
      ...faults,
      async close() {
        closes += 1;
        await faults.close();
      },
    };
    // A sleep that only an abort ends, as the real one does when close() aborts it.
    const sleep = (_ms: number, signal: AbortSignal) => new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve()));
    const km = retryingKeyManager(counted, retryOptionsSchema.parse({}), { sleep });
    faults.failAlways('get', unavailable);
    const pending = km.get(ctx, FIXED_KEY_ID);
    await new Promise<void>((resolve) => setImmediate(resolve));
    await Promise.all([km.close(), km.close()]);
    const err = await rejectsWithCode(pending, 'E_BACKEND_UNAVAILABLE');
    assert.equal((err as KeyClientError).details['attempts'], 1);
    assert.deepEqual([faults.calls.get, closes], [1, 1]);
    assert.equal((await fixed.health()).ok, false);
  });

  it("the caller's deadline ends a retry wait, and no attempt starts after it", async () => {
    const fixed = await fixedBackend.create(fixedBackend.optionsSchema.parse({ key, allow_insecure: true }), { allocator: plainAllocator() });
    const faults = faultyKeyManager(fixed);
    // A sleep that only an abort ends: a wait for a Retry-After longer than the caller's deadline.
    const sleep = (_ms: number, signal: AbortSignal) => new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve()));
    const km = retryingKeyManager(faults, retryOptionsSchema.parse({ attempts: 5 }), { sleep });
    faults.failAlways('get', () => unavailable({ status: 503, requestSent: true, retryAfterMs: 60_000 }));
    const deadline = new AbortController();
    const pending = km.get({ ...ctx, signal: deadline.signal }, FIXED_KEY_ID);
    await new Promise<void>((resolve) => setImmediate(resolve));
    deadline.abort();
    const err = await rejectsWithCode(pending, 'E_BACKEND_UNAVAILABLE');
    assert.equal((err as KeyClientError).details['attempts'], 1);
    assert.equal(faults.calls.get, 1);
    faults.heal();
    assert.equal((await km.get(ctx, FIXED_KEY_ID)).bytes().length, 32, "one caller's deadline leaves the manager working for the next");
    await km.close();
  });
});

describe('retryingKeyManager() delete', () => {
  /**
   * A FAKE for a fault a real server cannot be made to produce on cue: the
   * first delete succeeds at the server but its answer is lost (the
   * connection drops after the request went out); the key is then gone.
   */
  async function lostAnswer(): Promise<{ km: KeyManager; deletes: () => number }> {
    const fixed = await fixedBackend.create(fixedBackend.optionsSchema.parse({ key, allow_insecure: true }), { allocator: plainAllocator() });
    let deleted = false;
    let deletes = 0;
    const server: KeyManager = {
      ...fixed,
      async delete() {
        deletes += 1;
        if (deleted) throw notFound();
        deleted = true;
        throw unavailable({ requestSent: true });
      },
    };
    return { km: retryingKeyManager(server, retryOptionsSchema.parse({ jitter: false, attempts: 3 }), { sleep: async () => undefined }), deletes: () => deletes };
  }

  it('a retry that finds the key gone after an attempt whose answer was lost is success, not E_KEY_NOT_FOUND', async () => {
    const { km, deletes } = await lostAnswer();
    await km.delete(ctx, FIXED_KEY_ID);
    assert.equal(deletes(), 2);
  });

  it('a first attempt that finds nothing is still E_KEY_NOT_FOUND', async () => {
    const { km } = await setup();
    const faults = (await setup()).faults;
    faults.failNext('delete', () => notFound());
    await rejectsWithCode(retryingKeyManager(faults, retryOptionsSchema.parse({ jitter: false }), { sleep: async () => undefined }).delete(ctx, FIXED_KEY_ID), 'E_KEY_NOT_FOUND');
    await km.close();
  });
});
