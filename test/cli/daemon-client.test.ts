import assert from 'node:assert/strict';
import { chmodSync, linkSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { daemonClient } from '../../src/cli/daemon-client.js';
import { rejectsWithCode } from '../helpers/errors.js';
import { recordTimeouts } from '../helpers/timers.js';
import { healthOk, jsonError, portcullis, startStandIn, type StandIn } from './daemon-stand-in.js';

/**
 * The CLI's socket client against a stand-in daemon (daemon-stand-in.ts):
 * how connection failures and daemon errors reach the operator. Tests
 * against the real portcullisd live in test/daemon/.
 */

const dir = mkdtempSync(join(tmpdir(), 'portcullis-client-'));
chmodSync(dir, 0o755); // a child running as nobody must reach the sockets in here
let standIn: StandIn;

before(async () => {
  standIn = await startStandIn();
});
after(async () => {
  await standIn.close();
  rmSync(dir, { recursive: true, force: true });
});

/** A socket file nobody listens on: a hard link to a socket whose server has closed. */
async function staleSocket(): Promise<string> {
  const live = join(dir, 'live.sock');
  const stale = join(dir, 'stale.sock');
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(live, resolve));
  linkSync(live, stale);
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return stale;
}

describe('daemonClient() request', () => {
  it('sends JSON with content-type and length and resolves with the parsed 2xx answer', async () => {
    standIn.answer('PUT', '/v1/volumes/v1', { json: { name: 'v1' } });
    const answer = await daemonClient(standIn.socketPath).request<{ name: string }>('PUT', '/v1/volumes/v1', { device: '/dev/loop0' });
    assert.deepEqual(answer, { name: 'v1' });
    const seen = standIn.seen.at(-1);
    assert.equal(seen?.headers['content-type'], 'application/json');
    assert.equal(seen?.headers['content-length'], String(JSON.stringify({ device: '/dev/loop0' }).length));
    assert.deepEqual(seen?.body, { device: '/dev/loop0' });
  });

  it("throws the daemon's code, message and details on a non-2xx answer, adding http_status and retry_after_seconds", async () => {
    standIn.answer('DELETE', '/v1/volumes/busy', {
      status: 503,
      headers: { 'retry-after': '5' },
      json: { error: { code: 'E_OVERLOADED', message: 'Too many requests in flight', details: { pending: 64 } } },
    });
    const err = await rejectsWithCode(daemonClient(standIn.socketPath).request('DELETE', '/v1/volumes/busy'), 'E_OVERLOADED');
    assert.equal(err.message, 'Too many requests in flight');
    assert.deepEqual((err as unknown as { details: unknown }).details, { pending: 64, http_status: 503, retry_after_seconds: 5 });
  });

  it('takes a listed non-2xx status as an answer (health is 503 while failing), but never an error body', async () => {
    standIn.answer('GET', '/v1/health?failing', { status: 503, json: { ...healthOk, status: 'failing' } });
    const answer = await daemonClient(standIn.socketPath).request<{ status: string }>('GET', '/v1/health?failing', undefined, { answerStatuses: [503] });
    assert.equal(answer.status, 'failing');
    standIn.answer('GET', '/v1/health?stopping', { status: 503, json: { error: { code: 'E_SHUTTING_DOWN', message: 'stopping', details: {} } } });
    await rejectsWithCode(daemonClient(standIn.socketPath).request('GET', '/v1/health?stopping', undefined, { answerStatuses: [503] }), 'E_SHUTTING_DOWN');
  });

  it('reports an answer that is not API v1 JSON as E_DAEMON_PROTOCOL', async () => {
    standIn.answer('GET', '/v1/volumes/html', { status: 502, raw: '<html>Bad Gateway</html>' });
    const err = await rejectsWithCode(daemonClient(standIn.socketPath).request('GET', '/v1/volumes/html'), 'E_DAEMON_PROTOCOL');
    assert.match(err.message, /HTTP 502/);
  });

  it('gives up after timeoutMs with E_DAEMON_TIMEOUT, saying the request may still complete', async () => {
    standIn.answer('PUT', '/v1/volumes/slow', { hang: true });
    const timers = recordTimeouts();
    const err = await rejectsWithCode(daemonClient(standIn.socketPath, { timeoutMs: 300 }).request('PUT', '/v1/volumes/slow', {}), 'E_DAEMON_TIMEOUT').finally(() => timers.restore());
    // What ended it: the client's one timer, armed with timeoutMs, not the default (the stand-in never answers).
    assert.deepEqual(timers.delays(), [300]);
    assert.deepEqual((err as unknown as { details: unknown }).details, { socket: standIn.socketPath, method: 'PUT', path: '/v1/volumes/slow', timeout_seconds: 0.3 });
    assert.equal(standIn.seen.at(-1)?.url, '/v1/volumes/slow', 'the request was sent, so it may still complete');
    assert.match(err.message, /may still complete/);
  });
});

describe('portcullis: connection failures (exit 4, nothing sent)', () => {
  it('ENOENT: "no daemon socket at PATH" with the systemctl hint, as E_DAEMON_SOCKET_MISSING', async () => {
    const missing = join(dir, 'missing.sock');
    const run = await portcullis(['--socket', missing, 'volumes']);
    assert.equal(run.status, 4, run.stderr);
    assert.match(run.stderr, /^portcullis: E_DAEMON_SOCKET_MISSING: No daemon socket at .*missing\.sock \(--socket\): is portcullisd running\? \(systemctl status portcullis\)\n$/);
  });

  it('ECONNREFUSED on a stale socket file: "stale socket at PATH: nothing listens", as E_DAEMON_SOCKET_STALE', async () => {
    const stale = await staleSocket();
    const run = await portcullis(['status', '--socket', stale, '--json']);
    assert.equal(run.status, 4, run.stderr);
    const err = jsonError(run);
    assert.equal(err.code, 'E_DAEMON_SOCKET_STALE');
    assert.match(err.message, /^Stale socket at .*stale\.sock \(--socket\): nothing listens/);
    assert.equal(err.details['errno'], 'ECONNREFUSED');
  });

  it('a regular file where the socket should be is E_DAEMON_UNREACHABLE, "not a socket"', async () => {
    const file = join(dir, 'not-a-socket');
    writeFileSync(file, '');
    const run = await portcullis(['health', '--socket', file]);
    assert.equal(run.status, 4, run.stderr);
    assert.match(run.stderr, /E_DAEMON_UNREACHABLE: .*not-a-socket \(--socket\) is not a socket/);
  });

  it('EACCES for a user outside the socket\'s group: "permission denied on PATH: add your user to the socket\'s group", as E_DAEMON_SOCKET_DENIED', async () => {
    const rootOnly = await startStandIn({ dir });
    try {
      // Root may connect to any socket: as root, run the CLI as nobody (65534) on a 0600 socket;
      // as anyone else, take our own access away instead.
      const asRoot = process.getuid?.() === 0;
      chmodSync(rootOnly.socketPath, asRoot ? 0o600 : 0o000);
      const run = await portcullis(['volumes', '--socket', rootOnly.socketPath], asRoot ? { uid: 65534, gid: 65534 } : {});
      assert.equal(run.status, 4, run.stderr);
      assert.match(run.stderr, /E_DAEMON_SOCKET_DENIED: Permission denied on .*stand-in\.sock \(--socket\): add your user to the socket's group \(ls -l .*stand-in\.sock\)/);
      assert.equal(rootOnly.seen.length, 0, 'nothing reached the daemon');
    } finally {
      await rootOnly.close();
    }
  });
});

describe('portcullis: daemon errors and timeouts (exit 1)', () => {
  it("prints the daemon's code and message on stderr, and the whole error as JSON with --json", async () => {
    standIn.answer('GET', '/v1/volumes/gone', { status: 404, json: { error: { code: 'E_VOLUME_NOT_FOUND', message: 'No crypt mapping gone', details: { name: 'gone' } } } });
    const run = await portcullis(['--socket', standIn.socketPath, 'volume', 'gone']);
    assert.equal(run.status, 1);
    assert.equal(run.stdout, '');
    assert.equal(run.stderr, 'portcullis: E_VOLUME_NOT_FOUND: No crypt mapping gone\n');
    const json = await portcullis(['--socket', standIn.socketPath, 'volume', 'gone', '--json']);
    assert.equal(json.status, 1);
    assert.deepEqual(jsonError(json), { code: 'E_VOLUME_NOT_FOUND', message: 'No crypt mapping gone', details: { name: 'gone', http_status: 404 } });
  });

  it('shows Retry-After of an overloaded daemon', async () => {
    standIn.answer('DELETE', '/v1/volumes/v2', {
      status: 503,
      headers: { 'retry-after': '5' },
      json: { error: { code: 'E_OVERLOADED', message: 'Too many requests in flight (64); retry later', details: {} } },
    });
    const run = await portcullis(['--socket', standIn.socketPath, 'detach', 'v2']);
    assert.equal(run.status, 1);
    assert.equal(run.stderr, 'portcullis: E_OVERLOADED: Too many requests in flight (64); retry later (retry after 5 s)\n');
  });

  it('--timeout bounds the wait: E_DAEMON_TIMEOUT, exit 1 (the request may have been carried out)', async () => {
    standIn.answer('DELETE', '/v1/volumes/stuck', { hang: true });
    const run = await portcullis(['--socket', standIn.socketPath, '--timeout', '0.5', 'detach', 'stuck']);
    assert.equal(run.status, 1);
    assert.match(run.stderr, /E_DAEMON_TIMEOUT: No answer from portcullisd on .* within 0\.5 s \(--timeout\)/);
  });

  it('a bad --timeout is a usage error (exit 2)', async () => {
    for (const value of ['0', 'soon', '-1', '100000']) {
      const run = await portcullis(['--socket', standIn.socketPath, '--timeout', value, 'volumes']);
      assert.equal(run.status, 2, `${value}: ${run.stderr}`);
    }
  });
});
