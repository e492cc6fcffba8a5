import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createMetrics } from '../../src/daemon/metrics.js';

describe('createMetrics()', () => {
  it('counts what happens before prom-client is loaded: replayed in order at load, nothing lost', async () => {
    const metrics = createMetrics(() => undefined);
    // All before any await: prom-client cannot have loaded yet.
    metrics.observe('attach', 'ok', 0.02);
    metrics.observe('attach', 'E_KEY_NOT_FOUND', 0.5);
    metrics.connections.inc();
    metrics.connections.inc();
    metrics.connections.dec();
    metrics.inFlight.set(3);
    metrics.rejected('overloaded');
    metrics.keyFetched('cache', 0.0001);
    const text = await metrics.text();
    assert.match(text, /^portcullis_operations_total\{operation="attach",outcome="ok"\} 1$/m);
    assert.match(text, /^portcullis_operations_total\{operation="attach",outcome="E_KEY_NOT_FOUND"\} 1$/m);
    assert.match(text, /^portcullis_connections_open 1$/m);
    assert.match(text, /^portcullis_requests_in_flight 3$/m);
    assert.match(text, /^portcullis_requests_rejected_total\{reason="overloaded"\} 1$/m);
    assert.match(text, /^portcullis_key_fetch_seconds_count\{source="cache"\} 1$/m);
    metrics.observe('detach', 'ok', 0.01); // and after the load, straight in
    assert.match(await metrics.text(), /^portcullis_operations_total\{operation="detach",outcome="ok"\} 1$/m);
    assert.equal(metrics.contentType, 'text/plain; version=0.0.4; charset=utf-8');
  });
});
