/**
 * Keystone hung (SIGSTOP) under the daemon's key-manager stack, with a real
 * Barbican behind it: keys already cached are served, a fetch that needs a
 * new token gives up at the HTTP timeout, and a caller's deadline ends the
 * wait for a token at once without sending anything to Barbican. The fault
 * proxy in front of Barbican only records here (what reached Barbican).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { validateConfig } from '../../src/config/load.js';
import type { CachingKeyManager } from '../../src/keyclient/cache.js';
import type { KeyManager, RequestContext } from '../../src/keyclient/key-manager.js';
import { openCachedKeyManager, openKeyManager } from '../../src/keyclient/open.js';
import { plainAllocator } from '../../src/keyclient/secure-memory.js';
import { startBarbican, type BarbicanServer } from '../fixtures/barbican-server.js';
import { startFaultProxy, type FaultProxy } from '../fixtures/fault-proxy.js';
import { startKeystone, type KeystoneServer } from '../fixtures/keystone-server.js';
import { rejectsWithCode } from '../helpers/errors.js';

const allocator = plainAllocator();
let keystone: KeystoneServer;
let barbican: BarbicanServer;
let tap: FaultProxy;
let direct: KeyManager;
let ctx: RequestContext;

function configFor(endpoint: string, timeout: number) {
  const user = keystone.users.portcullis;
  const auth = { type: 'password', auth_url: keystone.authUrl, username: user.name, password: user.password };
  return validateConfig({ key_manager: { backend: 'barbican', barbican: { endpoint, timeout, auth } }, cache: { sweep_interval_seconds: 0 }, retry: { attempts: 2, base_delay_seconds: 0.05 } }, 'faults-keystone').config;
}
const openStack = (timeout: number): Promise<CachingKeyManager> => openCachedKeyManager(configFor(tap.url, timeout), { allocator });
const detailsOf = (err: Error) => (err as unknown as { details: Record<string, unknown> }).details;

before(async () => {
  keystone = await startKeystone();
  barbican = await startBarbican({ pipeline: 'keystone', keystone });
  tap = await startFaultProxy(barbican.url);
  direct = await openKeyManager(configFor(barbican.url, 10), { allocator });
  ctx = { projectId: keystone.projects.a.id };
});
after(async () => {
  await direct?.close();
  await tap?.stop();
  await barbican?.stop();
  await keystone?.stop();
});

describe('Keystone SIGSTOPped', () => {
  it('cached keys are served; a fetch needing a new token fails E_BACKEND_UNAVAILABLE at the timeout; nothing reached Barbican for it', async () => {
    const id = await direct.createKey(ctx, { algorithm: 'aes', length: 256 });
    // The warm stack's one fetch happens before the fault: a generous timeout, so a loaded machine cannot fail it.
    const warm = await openStack(10);
    const cold = await openStack(0.5);
    try {
      const key = Buffer.from((await warm.get(ctx, id)).bytes());
      const seen = tap.attempts.length;
      keystone.signal('SIGSTOP');
      try {
        assert.deepEqual(Buffer.from((await warm.get(ctx, id)).bytes()), key);
        const err = await rejectsWithCode(cold.get(ctx, id), 'E_BACKEND_UNAVAILABLE');
        assert.match(err.message, /Keystone/);
        assert.equal(detailsOf(err)['attempts'], 2);
        assert.equal(tap.attempts.length, seen, 'no request without a token went to Barbican');
      } finally {
        keystone.signal('SIGCONT');
      }
    } finally {
      await warm.close();
      await cold.close();
    }
  });

  it("a caller's deadline ends the wait for a token at once, long before the 30 s timeout (retry(barbican), the CLI's stack)", { timeout: 20_000 }, async () => {
    const id = await direct.createKey(ctx, { algorithm: 'aes', length: 256 });
    // Without the cache in front, so the backend's own answer at the deadline is what the caller sees.
    const cold = await openKeyManager(configFor(tap.url, 30), { allocator });
    const seen = tap.attempts.length;
    try {
      keystone.signal('SIGSTOP');
      try {
        const deadline = AbortSignal.timeout(1000);
        const err = await rejectsWithCode(cold.get({ ...ctx, signal: deadline }, id), 'E_BACKEND_UNAVAILABLE');
        assert.ok(deadline.aborted);
        assert.equal(detailsOf(err)['deadline'], true);
        assert.match(err.message, /Keystone was still being asked/);
        assert.equal(tap.attempts.length, seen);
      } finally {
        keystone.signal('SIGCONT');
      }
      // The token request abandoned by the deadline completes for the next caller: the stack works once Keystone does.
      assert.equal((await cold.get(ctx, id)).bytes().length, 32);
    } finally {
      await cold.close();
    }
  });
});
