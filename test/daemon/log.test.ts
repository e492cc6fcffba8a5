import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { describe, it } from 'node:test';
import winston from 'winston';
import type TransportStream from 'winston-transport';
import { createLogger, redact } from '../../src/daemon/log.js';
import { logOptionsSchema } from '../../src/config/daemon-options.js';

function capture(format: 'json' | 'text', level = 'debug') {
  const stream = new PassThrough();
  let out = '';
  stream.on('data', (c: Buffer) => (out += c.toString()));
  const log = createLogger(logOptionsSchema.parse({ format, level }), stream);
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

describe('createLogger() through winston', () => {
  const logJs = new URL('../../src/daemon/log.js', import.meta.url).pathname;

  it('runs every line through its winston logger: a transport added there gets the finished, redacted line, and only at or above the level', async () => {
    const { log, out } = capture('json', 'info');
    const seen: string[] = [];
    const Transport = (winston as unknown as { Transport: typeof TransportStream }).Transport;
    log.winston.add(new Transport({ log: (info: Record<symbol, string>, next: () => void) => (seen.push(info[Symbol.for('message')] ?? ''), next()) }));
    log.info('attach', { key_id: 'abc', passphrase: '00ff' } as never);
    log.debug('dropped', {});
    await new Promise((r) => setImmediate(r));
    assert.equal(seen.length, 1);
    assert.equal(seen[0], out());
    assert.match(seen[0] ?? '', /"passphrase":"\[redacted\]"/);
    assert.doesNotMatch(seen[0] ?? '', /00ff/);
  });

  it('writes audit lines whatever the level: to the stream with no audit file, to a 0600 JSON file before audit() returns', async () => {
    const quiet = capture('text', 'error');
    quiet.log.audit('key_access', { op: 'get', key_id: 'abc', outcome: 'ok' });
    quiet.log.warn('below the level', {});
    await new Promise((r) => setImmediate(r));
    assert.match(quiet.out(), /info {2}key_access audit=true op=get key_id=abc outcome=ok\n$/);
    const dir = mkdtempSync(join(tmpdir(), 'portcullis-log-'));
    try {
      const file = join(dir, 'audit.log');
      const log = createLogger(logOptionsSchema.parse({ format: 'text', level: 'error', audit_file: file }), new PassThrough());
      log.audit('key_access', { op: 'get', key_id: 'abc', outcome: 'ok' });
      const line = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
      assert.deepEqual({ ...line, timestamp: typeof line['timestamp'] }, { audit: true, key_id: 'abc', level: 'info', message: 'key_access', op: 'get', outcome: 'ok', timestamp: 'string' });
      assert.equal(statSync(file).mode & 0o777, 0o600);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('has every audit line on disk when audit() returns: a process killed right after loses none', () => {
    const dir = mkdtempSync(join(tmpdir(), 'portcullis-log-'));
    try {
      const file = join(dir, 'audit.log');
      const script = `
        const { createLogger } = await import(${JSON.stringify(logJs)});
        const log = createLogger({ level: 'info', format: 'json', audit_file: ${JSON.stringify(file)} });
        for (let i = 0; i < 500; i++) log.audit('key_access', { op: 'get', key_id: 'k' + i, outcome: 'ok' });
        process.kill(process.pid, 'SIGKILL');`;
      const child = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 30_000 });
      assert.equal(child.signal, 'SIGKILL', child.stderr);
      const ids = readFileSync(file, 'utf8').trimEnd().split('\n').map((l) => (JSON.parse(l) as { key_id: string }).key_id);
      assert.deepEqual(ids, Array.from({ length: 500 }, (_, i) => `k${i}`));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('fails an audit whose line cannot be written, every time, not only the first (the kernel refusing past a file size limit: EFBIG)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'portcullis-log-'));
    try {
      const script = `
        const { createLogger } = await import(${JSON.stringify(logJs)});
        const log = createLogger({ level: 'info', format: 'json', audit_file: ${JSON.stringify(join(dir, 'audit.log'))} });
        const outcomes = [];
        for (let i = 0; i < 40; i++) {
          try { log.audit('key_access', { op: 'get', key_id: 'k' + i, outcome: 'ok' }); outcomes.push('ok'); } catch (err) { outcomes.push(err.code); }
        }
        console.log(JSON.stringify(outcomes));`;
      // ulimit -f 1: files may not grow past 1 KiB; Node ignores SIGXFSZ, so write(2) fails with EFBIG.
      const child = spawnSync('/bin/sh', ['-c', 'ulimit -f 1 && exec "$0" --input-type=module -e "$1"', process.execPath, script], { encoding: 'utf8', timeout: 30_000 });
      assert.equal(child.status, 0, child.stderr);
      const outcomes = JSON.parse(child.stdout) as string[];
      const first = outcomes.indexOf('EFBIG');
      assert.ok(first > 0, child.stdout);
      assert.deepEqual(outcomes.slice(first), outcomes.slice(first).map(() => 'EFBIG'));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
