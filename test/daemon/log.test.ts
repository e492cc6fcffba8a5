import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { describe, it } from 'node:test';
import { createLogger, redact } from '../../src/daemon/log.js';
import { logOptionsSchema } from '../../src/config/daemon-options.js';

function capture(format: 'json' | 'text') {
  const stream = new PassThrough();
  let out = '';
  stream.on('data', (c: Buffer) => (out += c.toString()));
  const log = createLogger(logOptionsSchema.parse({ format, level: 'debug' }), stream);
  return { log, out: () => out };
}

describe('redact()', () => {
  it('drops byte arrays and fields named like secrets, at any depth, and keeps key ids', () => {
    const cleaned = redact({ key_id: 'k1', key_source: 'cache', token: 'gAAAA', nested: { password: 'p', bytes: Buffer.from('ab'), fine: 1 }, key: 'deadbeef' });
    assert.deepEqual(cleaned, { key_id: 'k1', key_source: 'cache', token: '[redacted]', nested: { password: '[redacted]', bytes: '[redacted bytes]', fine: 1 }, key: '[redacted]' });
  });

  it('keeps numbers and booleans under secret-sounding names: timings_ms.key is a time, not a key', () => {
    assert.deepEqual(redact({ timings_ms: { key: 3, open: 40 }, token_cached: true, key: 'deadbeef' }), { timings_ms: { key: 3, open: 40 }, token_cached: true, key: '[redacted]' });
  });
});

describe('createLogger()', () => {
  it('writes JSON lines with the event as message, secrets redacted by construction', async () => {
    const { log, out } = capture('json');
    log.info('attach', { name: 'v1', key_id: 'abc', passphrase: '00ff' } as never);
    await new Promise((r) => setImmediate(r));
    const line = JSON.parse(out().trim()) as Record<string, unknown>;
    assert.equal(line['message'], 'attach');
    assert.equal(line['key_id'], 'abc');
    assert.equal(line['passphrase'], '[redacted]');
    assert.doesNotMatch(out(), /00ff/);
  });
  it('writes readable text on a terminal, audit lines marked audit=true', async () => {
    const { log, out } = capture('text');
    log.audit('key_access', { op: 'get', key_id: 'abc', outcome: 'ok' });
    await new Promise((r) => setImmediate(r));
    assert.match(out(), /info {2}key_access audit=true op=get key_id=abc outcome=ok/);
  });
});
