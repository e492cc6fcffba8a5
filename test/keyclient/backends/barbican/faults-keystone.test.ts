/**
 * Keystone hung (SIGSTOP) under the daemon's key-manager stack, with a real
 * Barbican behind it: keys already cached are served, a fetch that needs a
 * new token gives up at the HTTP timeout, and a caller's deadline ends the
 * wait for a token at once without sending anything to Barbican. The fault
 * proxy in front of Barbican only records here (what reached Barbican).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { rejectsWithCode } from '../../../helpers/errors.js';
import { detailsOf, faultStackForFile, type FaultStack } from './fault-stack.js';

let s: FaultStack;
let ctx: FaultStack['ctx'];
faultStackForFile((started) => ((s = started), (ctx = started.ctx)));

/** Two attempts: enough to show each waited on Keystone, and half the wait of the default three. */
const twoAttempts = (timeout: number) => ({ barbican: { timeout }, retry: { attempts: 2 } });

describe('Keystone SIGSTOPped', () => {
  it('cached keys are served; a fetch needing a new token fails E_BACKEND_UNAVAILABLE at the timeout; nothing reached Barbican for it', async () => {
    const id = await s.newKey();
    // The warm stack's one fetch happens before the fault: a generous timeout, so a loaded machine cannot fail it.
    const warm = await s.openStack(twoAttempts(10));
    const cold = await s.openStack(twoAttempts(0.5));
    try {
      const key = Buffer.from((await warm.get(ctx, id)).bytes());
      const seen = s.proxy.attempts.length;
      s.keystone.signal('SIGSTOP');
      try {
        assert.deepEqual(Buffer.from((await warm.get(ctx, id)).bytes()), key);
        const err = await rejectsWithCode(cold.get(ctx, id), 'E_BACKEND_UNAVAILABLE');
        assert.match(err.message, /Keystone/);
        assert.equal(detailsOf(err)['attempts'], 2);
        assert.equal(s.proxy.attempts.length, seen, 'no request without a token went to Barbican');
      } finally {
        s.keystone.signal('SIGCONT');
      }
    } finally {
      await warm.close();
      await cold.close();
    }
  });

  it("a caller's deadline ends the wait for a token, not the 30 s timeout (retry(barbican), the CLI's stack)", async () => {
    const id = await s.newKey();
    // Without the cache in front, so the backend's own answer at the deadline is what the caller sees.
    const cold = await s.openRetrying(twoAttempts(30));
    const seen = s.proxy.attempts.length;
    try {
      s.keystone.signal('SIGSTOP');
      try {
        const deadline = AbortSignal.timeout(1000);
        const err = await rejectsWithCode(cold.get({ ...ctx, signal: deadline }, id), 'E_BACKEND_UNAVAILABLE');
        assert.ok(deadline.aborted);
        assert.equal(detailsOf(err)['deadline'], true);
        assert.match(err.message, /Keystone was still being asked/);
        assert.equal(s.proxy.attempts.length, seen);
      } finally {
        s.keystone.signal('SIGCONT');
      }
      // The token request abandoned by the deadline completes for the next caller: the stack works once Keystone does.
      assert.equal((await cold.get(ctx, id)).bytes().length, 32);
    } finally {
      await cold.close();
    }
  });
});
