/**
 * healthService(): the key-manager probe is shared and cached. Health is
 * open to every agent; each probe is a request to Barbican or KMIP, so
 * concurrent callers share the one under way and a result is reused for
 * BACKEND_CHECK_TTL_MS after it came. Requests running past their deadline
 * show as a failed `requests` check (degraded), as stuck commands do.
 * The clock is injected: nothing here waits for time to pass.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { BackendHealth } from '../../../src/keyclient/key-manager.js';
import { BACKEND_CHECK_TTL_MS, healthService, type HealthDeps } from '../../../src/daemon/service/health.js';
import { gate, healthyHostFacts, type Gate } from '../../fixtures/api-host.js';

interface Stand {
  health: ReturnType<typeof healthService>;
  probes: Gate;
  clock: { now: number };
  overrun: { count: number };
  answer: { ok: boolean };
}

function stand(holding: boolean): Stand {
  const probes = gate(holding);
  const clock = { now: 1_000_000 };
  const overrun = { count: 0 };
  const answer = { ok: true };
  const deps: HealthDeps = {
    keys: () => ({
      health: async (): Promise<BackendHealth> => {
        await probes.pass();
        return { ok: answer.ok, detail: answer.ok ? 'up' : 'down' };
      },
    }),
    ...healthyHostFacts,
    requests: () => ({ overrun: overrun.count }),
    now: () => clock.now,
  };
  return { health: healthService(deps), probes, clock, overrun, answer };
}

describe('healthService()', () => {
  it('20 concurrent calls share one key-manager probe', async () => {
    const { health, probes } = stand(true);
    const calls = Array.from({ length: 20 }, () => health());
    await probes.reached(1);
    probes.release();
    const answers = await Promise.all(calls);
    assert.equal(probes.started, 1);
    assert.deepEqual(new Set(answers.map((a) => a.status)), new Set(['ok']));
  });

  it(`reuses the probe's answer for ${BACKEND_CHECK_TTL_MS} ms after it came, then asks again`, async () => {
    const { health, probes, clock, answer } = stand(false);
    await health();
    clock.now += BACKEND_CHECK_TTL_MS;
    answer.ok = false;
    assert.equal((await health()).checks['key_manager']?.ok, true, 'within the TTL: the cached answer');
    assert.equal(probes.started, 1);
    clock.now += 1;
    const after = await health();
    assert.equal(probes.started, 2);
    assert.equal(after.checks['key_manager']?.ok, false, 'past the TTL: the key manager is asked again');
    assert.equal(after.status, 'degraded');
  });

  it('a request running past its deadline is a failed `requests` check: degraded, not failing', async () => {
    const { health, overrun } = stand(false);
    assert.equal((await health()).checks['requests']?.ok, true);
    overrun.count = 2;
    const answer = await health();
    assert.equal(answer.checks['requests']?.ok, false);
    assert.match(answer.checks['requests']?.detail ?? '', /^2 request\(s\) answered 504 E_REQUEST_TIMEOUT still run/);
    assert.equal(answer.status, 'degraded');
  });
});
