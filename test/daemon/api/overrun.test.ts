/**
 * A request past limits.request_timeout_seconds is answered 504
 * E_REQUEST_TIMEOUT at once, but its work may still run (an attach
 * mid-format stops only at its next step). Until that work ends it keeps its
 * admission slot and the shutdown drain waits for it: a SIGTERM must not
 * finish while an attach still writes to a device. It is counted as overrun
 * meanwhile, as a stuck command is. Each wait below is for an event (an
 * answer, a held call starting, the drain resolving), never for a time.
 */
import assert from 'node:assert/strict';
import { setImmediate as turn } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { attachAnswer, gate, startApiHost, volumesWith, type ApiHost, type Gate } from '../../fixtures/api-host.js';

const attachBody = { device: '/dev/loop0', provider: 'nop', key: { id: 'k' }, project_id: 'p1' };

describe('a request answered at its deadline while its work still runs', () => {
  let host: ApiHost;
  let attaches: Gate;
  let lists: Gate;

  before(async () => {
    attaches = gate();
    lists = gate();
    host = await startApiHost({
      limits: { request_timeout_seconds: 1, max_pending_requests: 1, max_pending_reads: 1 },
      deps: {
        volumes: volumesWith({
          attach: async (name, body) => {
            await attaches.pass();
            return attachAnswer(name, body.device);
          },
          list: async () => (await lists.pass(), []),
        }),
      },
    });
  });
  after(async () => {
    attaches?.release();
    lists?.release();
    await host?.close();
  });

  it('keeps its admission slot and the drain until the work ends, and is counted as overrun meanwhile', async () => {
    const answer = await host.call('PUT', '/v1/volumes/v1', attachBody);
    assert.equal(answer.status, 504, answer.text);
    assert.equal((answer.json as { error: { code: string } }).error.code, 'E_REQUEST_TIMEOUT');
    assert.equal(attaches.started, 1);

    let drained = false;
    const drain = host.api.drained().then(() => (drained = true));
    // Let every callback already due run: a drain released at the deadline would have resolved by now.
    await turn();
    await turn();
    assert.equal(drained, false, 'the drain waits for the attach that still runs');
    assert.equal(host.admission.pending, 1, 'the attach still holds its admission slot');
    assert.equal(host.api.overrun, 1);
    assert.match(await host.metrics.text(), /^portcullis_requests_overrun 1$/m);
    assert.match(await host.metrics.text(), /^portcullis_requests_in_flight 1$/m);

    // With the one slot held, the next attach is refused rather than run beside the first.
    const second = await host.call('PUT', '/v1/volumes/v2', attachBody);
    assert.equal(second.status, 503, second.text);
    assert.equal((second.json as { error: { code: string } }).error.code, 'E_OVERLOADED');

    attaches.release();
    await drain;
    assert.equal(host.admission.pending, 0);
    assert.equal(host.api.overrun, 0);
    assert.match(await host.metrics.text(), /^portcullis_requests_overrun 0$/m);
    attaches.holding = false;
    assert.equal((await host.call('PUT', '/v1/volumes/v2', attachBody)).status, 200, 'the freed slot admits the next attach');
  });

  it('a read past its deadline keeps its read slot until it ends', async () => {
    const answer = await host.call('GET', '/v1/volumes');
    assert.equal(answer.status, 504, answer.text);
    assert.equal(host.readAdmission.pending, 1);
    assert.equal(host.api.overrun, 1);
    const refused = await host.call('GET', '/v1/volumes');
    assert.equal(refused.status, 503, refused.text);
    assert.equal((refused.json as { error: { code: string } }).error.code, 'E_OVERLOADED');
    lists.release();
    lists.holding = false;
    await host.call('GET', '/v1/volumes').then((a) => assert.equal(a.status, 200, a.text));
    assert.equal(host.readAdmission.pending, 0);
    assert.equal(host.api.overrun, 0);
  });
});
