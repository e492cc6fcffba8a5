/**
 * The defects the socket API fuzz (fuzz.test.ts) found, one case each, so
 * that each stays fixed: each of those failed on the code before its fix
 * (docs/reliability.md lists them). Two guards besides: 100-continue, and the
 * deepest body the limit allows. A real portcullisd on the local keystore,
 * and one real loop device.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startDaemonProcess, type DaemonProcess } from '../../fixtures/daemon.js';
import { waitUntil } from '../../helpers/wait.js';
import { assertRefused, httpClient, rawExchange, type Reply } from './fuzz-kit.js';
import { makeDeviceWorld, type DeviceWorld } from './fuzz-world.js';

const BOUND = { timeoutMs: 20_000 };

describe('socket API input defects stay fixed', { skip: process.getuid?.() !== 0 ? 'needs root for a loop device' : false }, () => {
  let dir: string;
  let devices: DeviceWorld;
  let daemon: DaemonProcess;
  let client: ReturnType<typeof httpClient>;
  const raw = async (text: string | Buffer): Promise<Reply> => {
    const reply = await rawExchange(daemon.socketPath, Buffer.isBuffer(text) ? text : Buffer.from(text, 'latin1'), BOUND);
    assert.ok(reply !== undefined, `the daemon closed without answering ${JSON.stringify(text.toString().slice(0, 100))}`);
    return reply;
  };
  const codeOf = (reply: Reply): string => (JSON.parse(reply.text) as { error: { code: string } }).error.code;
  const attach = (device: string, extra: Record<string, unknown> = {}) => ({ device, provider: 'nop', key: { id: 'k' }, project_id: 'p1', ...extra });

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'portcullisd-input-'));
    devices = makeDeviceWorld(dir, 1);
    daemon = await startDaemonProcess({
      dir,
      // The largest body the config allows, for the nesting case below.
      config: { key_manager: { backend: 'local', local: { path: join(dir, 'keystore.db'), kek_file: join(dir, 'kek') } }, log: { format: 'json' }, limits: { max_body_bytes: 1_048_576 } },
    });
    client = httpClient(daemon.socketPath);
  });
  after(async () => {
    client?.close();
    await daemon?.stop();
    devices?.cleanup();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  it('"GET //" is 400 E_BAD_REQUEST, and the daemon lives on (new URL() threw outside the handler: any peer could stop it)', async () => {
    assert.equal(codeOf(await raw('GET // HTTP/1.1\r\nHost: p\r\n\r\n')), 'E_BAD_REQUEST');
    assert.equal(codeOf(await raw('GET //[::1 HTTP/1.1\r\nHost: p\r\n\r\n')), 'E_BAD_REQUEST');
    assert.equal(daemon.child.exitCode, null);
    assert.ok([200, 503].includes((await client.call('GET', '/v1/health')).status));
  });

  it('a path is matched as sent: "/v1/x/../health" is no route, not /v1/health', async () => {
    const reply = await raw('GET /v1/x/../health HTTP/1.1\r\nHost: p\r\n\r\n');
    assert.equal(reply.status, 404, reply.text);
    assert.equal(codeOf(reply), 'E_ROUTE_NOT_FOUND');
  });

  it('what the HTTP parser refuses is answered in the API shape, with the parser\'s reason, and the connection closed', async () => {
    const method = await raw('x\r\n\r\n');
    assertRefused(method, 'bad method');
    assert.deepEqual(JSON.parse(method.text).error.details, { reason: 'HPE_INVALID_METHOD' });
    assert.equal(method.headers['connection'], 'close');
    assert.equal(codeOf(await raw(`GET /v1/health HTTP/1.1\r\nX: ${'a'.repeat(20_000)}\r\n\r\n`)), 'E_HEADERS_TOO_LARGE');
    assertRefused(await raw('PUT /v1/volumes/a HTTP/1.1\r\nHost: p\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n{}'), 'two lengths');
  });

  it('HTTP/1.1 without Host, CONNECT and an unknown Expect are answered in the API shape (Node answered bare, or not at all)', async () => {
    const noHost = await raw('GET /v1/nothing HTTP/1.1\r\n\r\n');
    assert.equal(codeOf(noHost), 'E_ROUTE_NOT_FOUND');
    const connectMethod = await raw('CONNECT /v1/health HTTP/1.1\r\nHost: p\r\n\r\n');
    assertRefused(connectMethod, 'CONNECT');
    assert.equal(codeOf(connectMethod), 'E_METHOD_NOT_ALLOWED');
    assert.equal(codeOf(await raw('PUT /v1/volumes/a HTTP/1.1\r\nHost: p\r\nExpect: x\r\nContent-Length: 2\r\n\r\n{}')), 'E_BAD_REQUEST');
  });

  it('Expect: 100-continue from an allowed peer gets its 100 Continue, then the answer to its body', async () => {
    const { continued, reply } = await new Promise<{ continued: boolean; reply: Reply }>((resolve, reject) => {
      let continued = false;
      const req = http.request({ socketPath: daemon.socketPath, method: 'PUT', path: '/v1/volumes/cont', headers: { expect: '100-continue', 'content-length': '2' } }, (res) => {
        let text = '';
        res.on('data', (c: Buffer) => (text += c.toString()));
        res.on('end', () => resolve({ continued, reply: { status: res.statusCode ?? 0, headers: { 'content-type': String(res.headers['content-type']) }, text } }));
      });
      // The body goes only once the daemon has said to continue.
      req.on('continue', () => {
        continued = true;
        req.end('{}');
      });
      req.on('error', reject);
      req.flushHeaders();
    });
    assert.equal(continued, true);
    assert.equal(assertRefused(reply, 'continued'), 'E_BAD_REQUEST');
    assert.match(JSON.parse(reply.text).error.message, /device/, 'the body was read and validated');
  });

  it('an Upgrade with a body is refused at once (Node stopped parsing at the upgrade; the handler waited for a body that never came)', async () => {
    const reply = await raw('PUT /v1/volumes/a HTTP/1.1\r\nHost: p\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n');
    assert.equal(codeOf(reply), 'E_BAD_REQUEST');
    assert.match(JSON.parse(reply.text).error.message, /Upgrade/);
  });

  it('a body that is not UTF-8 is 400, not read as U+FFFD (a nop attach with a mangled project answered 200)', async () => {
    const loop = devices.loops[0] ?? '';
    const text = JSON.stringify(attach(loop)).replace('"p1"', '"p\u0001"');
    const body = Buffer.from(text, 'utf8');
    body[body.indexOf(0x01)] = 0xff;
    const reply = await client.call('PUT', '/v1/volumes/utf8', body);
    assert.equal(reply.status, 400, reply.text);
    assert.match(JSON.parse(reply.text).error.message, /not valid UTF-8/);
  });

  it('a lone UTF-16 surrogate spelt as a JSON escape is 400 naming where, before any key is made (an ephemeral attach answered 500 E_KEYSTORE_INTEGRITY, a false tampering alarm)', async () => {
    const loop = devices.loops[0] ?? '';
    for (const [where, text] of [
      ['project_id', `{"device":"${loop}","project_id":"x\\udfffy","key_scope":"instance","provider":"luks2"}`],
      ['(body) (a key)', `{"device":"${loop}","project_id":"p","\\ud800":1}`],
    ] as const) {
      const reply = await client.call('PUT', '/v1/ephemeral/surrogate/disk0', text, { 'content-type': 'application/json' });
      assert.equal(reply.status, 400, reply.text);
      assert.equal(codeOf(reply), 'E_BAD_REQUEST');
      assert.equal(JSON.parse(reply.text).error.details.path, where === '(body) (a key)' ? '(a key)' : where);
    }
    // A well-formed pair is text like any other: refused here only for what it is, never as a surrogate.
    const paired = await client.call('PUT', '/v1/ephemeral/surrogate/disk0', `{"device":"/dev/portcullis-none","project_id":"x\\ud83d\\ude00y"}`, { 'content-type': 'application/json' });
    assert.doesNotMatch(paired.text, /surrogate/);
  });

  it('a nop attach needs a block device: /dev/null and a symlink to /etc/passwd are 422 E_DEVICE_NOT_FOUND; a loop device is 200', async () => {
    for (const device of ['/dev/null', join(devices.devDir, 'to-passwd'), join(devices.devDir, 'nothing-here')]) {
      const reply = await client.call('PUT', '/v1/volumes/nop', JSON.stringify(attach(device)));
      assert.equal(reply.status, 422, `${device}: ${reply.text}`);
      assert.equal(codeOf(reply), 'E_DEVICE_NOT_FOUND');
    }
    const ok = await client.call('PUT', '/v1/volumes/nop', JSON.stringify(attach(devices.loops[0] ?? '')));
    assert.equal(ok.status, 200, ok.text);
    assert.equal((JSON.parse(ok.text) as { mapper_path: string }).mapper_path, devices.loops[0]);
  });

  it('an unknown or repeated query flag is refused: a misspelt "?defered=true" must not become a plain detach', async () => {
    for (const query of ['?defered=true', '?deferred=1&deferred=0', '?erase=true']) {
      const reply = await client.call('DELETE', `/v1/volumes/v1${query}`);
      assert.equal(reply.status, 400, `${query}: ${reply.text}`);
      assert.equal(codeOf(reply), 'E_BAD_REQUEST', query);
      assert.match(JSON.parse(reply.text).error.message, /[Qq]uery parameter/, query);
    }
    assert.equal(codeOf(await client.call('GET', '/v1/health?verbose=1')), 'E_BAD_REQUEST');
  });

  it('a body nested 500,000 deep (1 MiB, the largest allowed) is 400, at the top level and inside a field, and the daemon lives on', async () => {
    const depth = 500_000;
    for (const body of ['['.repeat(depth) + ']'.repeat(depth), `{"device":${'['.repeat(depth / 2 - 8)}${']'.repeat(depth / 2 - 8)}}`, `{"x":${'{"a":'.repeat(depth / 5)}1${'}'.repeat(depth / 5)}}`]) {
      const reply = await client.call('PUT', '/v1/volumes/deep', body);
      assert.equal(assertRefused(reply, `${body.length} bytes of nesting`), 'E_BAD_REQUEST');
    }
    assert.equal(daemon.child.exitCode, null);
  });

  it('a client gone mid-body is its own failure: nothing is logged as an internal error', async () => {
    const metric = async (): Promise<string> => (await client.call('GET', '/metrics')).text;
    const open = async (): Promise<number> => Number(/^portcullis_connections_open (\d+)$/m.exec(await metric())?.[1]);
    const baseline = await open();
    const socket = connect(daemon.socketPath);
    await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
    socket.write('PUT /v1/volumes/gone HTTP/1.1\r\nHost: p\r\nContent-Length: 100\r\n\r\n{"dev');
    await waitUntil('the daemon counting the half-sent request', async () => (await open()) === baseline + 1);
    socket.destroy();
    // Once the daemon has seen the connection close, the handler has settled.
    await waitUntil('the daemon seeing the close', async () => (await open()) === baseline);
    assert.doesNotMatch(daemon.log(), /internal error/);
  });
});
