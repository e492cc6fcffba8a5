/**
 * Reads that run commands or ask the key manager (GET /v1/volumes, GET
 * /v1/volumes/NAME, GET /v1/health) pass their own small admission queue
 * (limits.max_pending_reads): past it a read is answered 503 E_OVERLOADED at
 * once, while attaches, admitted by their own queue, still run. And health
 * asks the key manager once for any number of concurrent callers.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { BackendHealth } from '../../../src/keyclient/key-manager.js';
import { healthService } from '../../../src/daemon/service/health.js';
import { waitUntil } from '../../helpers/wait.js';
import { gate, healthyHostFacts, startApiHost, volumesWith, type ApiHost, type Gate } from '../../fixtures/api-host.js';

const READS = 3;
const attachBody = { device: '/dev/loop0', provider: 'nop', key: { id: 'k' }, project_id: 'p1' };
const codeOf = (answer: { json: unknown }): string | undefined => (answer.json as { error?: { code: string } }).error?.code;

describe('bounded reads', () => {
  let host: ApiHost;
  let lists: Gate;
  let probes: Gate;

  before(async () => {
    lists = gate();
    probes = gate(false);
    /** The key manager's health(), counted and held: how many times health asked it. */
    const countingKeyManager = {
      health: async (): Promise<BackendHealth> => {
        await probes.pass();
        return { ok: true, detail: 'counting stand-in' };
      },
    };
    const health = healthService({
      keys: () => countingKeyManager,
      ...healthyHostFacts,
      requests: () => ({ overrun: 0 }),
    });
    host = await startApiHost({
      limits: { max_pending_reads: READS, max_pending_requests: 2 },
      deps: {
        health,
        volumes: volumesWith({ list: async () => (await lists.pass(), []) }),
      },
    });
  });
  after(async () => {
    lists?.release();
    probes?.release();
    await host?.close();
  });

  it(`past limits.max_pending_reads (${READS}) a read is 503 E_OVERLOADED, while an attach is still admitted`, async () => {
    const held = Array.from({ length: READS }, () => host.call('GET', '/v1/volumes'));
    await lists.reached(READS);
    // Those stay held; a read past the limit, were it admitted, would answer at once (and so fail below, not hang).
    lists.holding = false;
    probes.holding = false;
    const over = await host.call('GET', '/v1/volumes');
    assert.equal(over.status, 503, over.text);
    assert.equal(codeOf(over), 'E_OVERLOADED');
    assert.match(over.text, /limits\.max_pending_reads/);
    const overHealth = await host.call('GET', '/v1/health');
    assert.equal(codeOf(overHealth), 'E_OVERLOADED', 'health is a bounded read too');
    assert.equal(lists.started, READS, 'the refused read ran nothing');
    const attach = await host.call('PUT', '/v1/volumes/v1', attachBody);
    assert.equal(attach.status, 200, `an attach beside ${READS} held reads: ${attach.text}`);
    lists.release();
    for (const answer of await Promise.all(held)) assert.equal(answer.status, 200, answer.text);
    assert.equal(host.readAdmission.pending, 0);
    assert.match(await host.metrics.text(), /^portcullis_requests_rejected_total\{reason="overloaded_reads"\} 2$/m);
  });

  it(`${READS} concurrent GET /v1/health calls ask the key manager once`, async () => {
    probes.holding = true;
    const calls = Array.from({ length: READS }, () => host.call('GET', '/v1/health'));
    await probes.reached(1);
    // Every caller is in (admitted, waiting on health) before the one probe answers.
    await waitUntil(`${READS} health reads admitted`, () => host.readAdmission.pending === READS, { intervalMs: 5 });
    probes.release();
    const answers = await Promise.all(calls);
    for (const answer of answers) {
      assert.equal(answer.status, 200, answer.text);
      assert.equal((answer.json as { checks: Record<string, { ok: boolean }> }).checks['key_manager']?.ok, true);
    }
    assert.equal(probes.started, 1);
  });
});
