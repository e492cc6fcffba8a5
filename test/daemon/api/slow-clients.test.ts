/**
 * Slow and idle clients against a real portcullisd: 200 of them (idle,
 * trickling headers, a body that never completes) hang on while real
 * requests still succeed, then are cut off by the header and body timeouts
 * with a 408 in the API's shape. Also: the connection limit, and a peer with
 * no role refused before its body is read. The timeouts start long (nothing
 * can be cut off while the real requests run) and are made short by a
 * reload; every wait is bounded, nothing asserts on time.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { stringify } from 'yaml';
import { startDaemonProcess, type DaemonProcess } from '../../fixtures/daemon.js';
import { waitForMatch, waitUntil } from '../../helpers/wait.js';
import { assertErrorAnswer, assertRefused, httpClient, parseReply, rawExchange } from './fuzz-kit.js';
import { makeDeviceWorld, type DeviceWorld } from './fuzz-world.js';

const NOBODY = 65534;
const SLOW = 200;

interface SlowClient {
  kind: 'idle' | 'headers' | 'body';
  closed: boolean;
  received: Buffer;
  socket: Socket;
}

/** A client that connects and then sends too little: nothing, headers a byte at a time, or a body that never completes. */
function slowClient(socketPath: string, kind: SlowClient['kind'], i: number): Promise<SlowClient> {
  return new Promise((resolve, reject) => {
    const socket = connect(socketPath);
    const client: SlowClient = { kind, closed: false, received: Buffer.alloc(0), socket };
    let timer: NodeJS.Timeout | undefined;
    socket.on('data', (c: Buffer) => (client.received = Buffer.concat([client.received, c])));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      client.closed = true;
      clearInterval(timer);
    });
    socket.once('connect', () => {
      if (kind === 'headers') {
        socket.write(`PUT /v1/volumes/slow${i} HTTP/1.1\r\nHost: p\r\nX-Slow: `);
        timer = setInterval(() => socket.write('a'), 250);
      } else if (kind === 'body') {
        // A mutating route: under the old order this request held an admission slot while its body trickled.
        socket.write(`PUT /v1/volumes/slow${i} HTTP/1.1\r\nHost: p\r\nContent-Type: application/json\r\nContent-Length: 4000\r\n\r\n{"device":`);
        timer = setInterval(() => socket.write(' '), 250);
      }
      resolve(client);
    });
    socket.once('error', reject);
  });
}

describe('slow and idle clients', { skip: process.getuid?.() !== 0 ? 'needs root for a loop device and another uid' : false }, () => {
  let dir: string;
  let devices: DeviceWorld;
  let daemon: DaemonProcess;
  let config: Record<string, unknown>;
  let reloads = 0;
  const reload = async (limits: Record<string, unknown>): Promise<void> => {
    const nth = (reloads += 1);
    const next: Record<string, unknown> = { ...config, limits: { ...(config['limits'] as object), ...limits }, socket: { ...(config['socket'] as object), path: daemon.socketPath } };
    writeFileSync(daemon.configPath, stringify(next));
    daemon.child.kill('SIGHUP');
    await waitUntil(`reload ${nth} applied`, () => daemon.log().split('config reloaded').length - 1 >= nth, { describe: () => daemon.log() });
  };
  const openConnections = async (client: ReturnType<typeof httpClient>): Promise<number> => Number(/^portcullis_connections_open (\d+)$/m.exec((await client.call('GET', '/metrics')).text)?.[1]);

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'portcullisd-slow-'));
    devices = makeDeviceWorld(dir, 1);
    config = {
      key_manager: { backend: 'local', local: { path: join(dir, 'keystore.db'), kek_file: join(dir, 'kek') } },
      log: { format: 'json' },
      socket: { mode: '0666' },
      // Long client timeouts to begin with: nothing is cut off until the test reloads shorter ones.
      limits: { max_pending_requests: 4, max_connections: SLOW + 20, header_timeout_seconds: 600, body_timeout_seconds: 600 },
    };
    daemon = await startDaemonProcess({ dir, config });
  });
  after(async () => {
    await daemon?.stop();
    devices?.cleanup();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  it('200 slow clients hang on while health and nop attaches succeed; then the header and body timeouts cut every one off with 408 E_CLIENT_TIMEOUT', async () => {
    const kinds: Array<SlowClient['kind']> = ['idle', 'headers', 'body'];
    const slow = await Promise.all(Array.from({ length: SLOW }, (_, i) => slowClient(daemon.socketPath, kinds[i % 3] ?? 'idle', i)));
    let client = httpClient(daemon.socketPath);
    try {
      const cutOff = () => slow.filter((s) => s.closed).map((s) => `${s.kind}: ${s.received.toString().slice(-160)}`).join('\n');
      await waitUntil('the daemon holding every slow connection', async () => (await openConnections(client)) >= SLOW + 1, { describe: cutOff });
      const health = await client.call('GET', '/v1/health');
      assert.ok([200, 503].includes(health.status), health.text);
      assert.match(JSON.parse(health.text).status as string, /^(ok|degraded|failing)$/);
      // More attaches than limits.max_pending_requests, while 66 bodies trickle into the same mutating route.
      for (let i = 0; i < 8; i += 1) {
        const attach = await client.call('PUT', `/v1/volumes/real${i}`, JSON.stringify({ device: devices.loops[0], provider: 'nop', key: { id: 'k' }, project_id: 'p1' }));
        assert.equal(attach.status, 200, `attach ${i} while slow clients hang on: ${attach.text}`);
      }
      assert.deepEqual(slow.filter((s) => s.closed).map((s) => s.kind), [], 'no slow client was cut off while the timeouts were long');

      client.close();
      await reload({ header_timeout_seconds: 1, body_timeout_seconds: 1 });
      await waitUntil('every slow client cut off', () => slow.every((s) => s.closed), { describe: () => `${slow.filter((s) => !s.closed).length} still open` });
      // A fresh connection: the kept-alive one may have been closed as idle under the short timeout.
      client = httpClient(daemon.socketPath);
      for (const s of slow) {
        const reply = parseReply(s.received, true);
        assert.ok(reply !== undefined, `${s.kind}: no answer before the close: ${JSON.stringify(s.received.toString())}`);
        assert.equal(assertRefused(reply, s.kind), 'E_CLIENT_TIMEOUT', s.kind);
        assert.equal(reply.headers['connection'], 'close');
      }
      assert.match((await client.call('GET', '/metrics')).text, new RegExp(`^portcullis_requests_rejected_total\\{reason="client_timeout"\\} ${SLOW}$`, 'm'));
      assert.ok([200, 503].includes((await client.call('GET', '/v1/health')).status), 'the daemon still answers');
    } finally {
      client.close();
      for (const s of slow) s.socket.destroy();
    }
  });

  it('past limits.max_connections a new connection is answered 503 E_OVERLOADED and closed; the others are served', async () => {
    await reload({ max_connections: 3, header_timeout_seconds: 600, body_timeout_seconds: 600 });
    // One kept-alive connection, and only it, before the test fills the limit: what earlier tests opened is closed by then.
    const client = httpClient(daemon.socketPath);
    await waitUntil('only this connection open', async () => (await openConnections(client)) === 1);
    const held = await Promise.all([1, 2].map((i) => slowClient(daemon.socketPath, 'idle', i)));
    try {
      // Accepted in order: the two idle connections are counted before this one, the fourth.
      const reply = await rawExchange(daemon.socketPath, Buffer.alloc(0), { timeoutMs: 20_000 });
      assert.ok(reply !== undefined, 'an answer to the connection over the limit');
      assert.equal(reply.status, 503);
      assert.equal(assertErrorAnswer(reply, 'over max_connections'), 'E_OVERLOADED');
      assert.equal(reply.headers['retry-after'], '1');
      assert.equal(held.filter((h) => h.closed).length, 0, 'the connections within the limit stay');
      const metrics = await client.call('GET', '/metrics');
      assert.equal(metrics.status, 200, 'a connection within the limit is served');
      assert.match(metrics.text, /^portcullis_requests_rejected_total\{reason="connections"\} 1$/m);
    } finally {
      client.close();
      for (const h of held) h.socket.destroy();
    }
  });

  it('a peer with no role gets 403 E_PEER_FORBIDDEN before its body is read: the body never comes, nor a 100 Continue', async () => {
    // Headers only, announcing a body that is never sent; as uid nobody, so SO_PEERCRED says so.
    const script = `
      const s = require('node:net').connect(process.argv[1], () => s.write('PUT /v1/volumes/x HTTP/1.1\\r\\nHost: p\\r\\nExpect: 100-continue\\r\\nContent-Length: 60000\\r\\n\\r\\n'));
      let got = ''; s.on('data', (c) => (got += c)); s.on('close', () => process.stdout.write(got)); s.on('error', () => undefined);`;
    const child = spawn(process.execPath, ['-e', script, daemon.socketPath], { uid: NOBODY, gid: NOBODY, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString('latin1')));
    const exited = new Promise<void>((resolve) => child.on('close', () => resolve()));
    // The daemon closes the connection after its answer: the child ends without a timeout of its own.
    await waitForMatch('the answer to the peer with no role', () => out, /"code":"E_PEER_FORBIDDEN"/, { timeoutMs: 20_000 });
    await exited;
    assert.doesNotMatch(out, /100 Continue/);
    const reply = parseReply(Buffer.from(out, 'latin1'), true);
    assert.ok(reply !== undefined);
    assert.equal(assertRefused(reply, 'no role'), 'E_PEER_FORBIDDEN');
    assert.equal(reply.headers['connection'], 'close');
  });
});
