/**
 * The socket API of a real portcullisd process, on this host: authorization
 * from SO_PEERCRED, validation, body limits, error codes, cache and metrics.
 * Nothing here needs dm-crypt: every request below is settled before a
 * device would be touched. Attaches on a real kernel are in attach.vm.test.ts.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { waitForMatch, waitUntil } from '../helpers/wait.js';
import { auditLines, startDaemonProcess, type Answer, type DaemonProcess } from '../fixtures/daemon.js';
import { describeSecrets, findSecrets } from '../helpers/secret-scan.js';
import { localBackend } from '../../src/keyclient/backends/local/backend.js';
import { objectOfType } from '../../src/keyclient/objects/index.js';
import { adoptSecret, plainAllocator } from '../../src/util/secure-memory.js';

const daemonMain = fileURLToPath(new URL('../fixtures/daemon-main.js', import.meta.url));
const NOBODY = 65534;


function errorOf(answer: Answer): { code: string; message: string; details: Record<string, unknown> } {
  const body = answer.body as { error?: { code: string; message: string; details: Record<string, unknown> } };
  assert.ok(body.error, `expected an error body, got ${answer.text}`);
  return body.error;
}

function localConfig(dir: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    key_manager: { backend: 'local', local: { path: join(dir, 'keystore.db'), kek_file: join(dir, 'kek') } },
    log: { level: 'debug', format: 'json', audit_file: join(dir, 'audit.log') },
    ...extra,
  };
}

describe('portcullisd socket API on the local keystore', () => {
  let daemon: DaemonProcess;
  let dir: string;
  const attachBody = { device: '/dev/loop-none', key: { id: '00000000-0000-4000-8000-000000000000' }, project_id: 'p1' };
  /** A key in project p1's keystore, stored before the daemon starts, for the no-key-material test. */
  const knownKey = randomBytes(32);
  let knownKeyId: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'portcullisd-api-'));
    const keystore = await localBackend.create(localBackend.optionsSchema.parse({ path: join(dir, 'keystore.db'), kek_file: join(dir, 'kek') }), { allocator: plainAllocator() });
    knownKeyId = await keystore.store({ projectId: 'p1' }, objectOfType('symmetric', { algorithm: 'aes', bitLength: 256 }, adoptSecret(plainAllocator(), Buffer.from(knownKey))));
    await keystore.close();
    daemon = await startDaemonProcess({
      dir,
      // 0666 so that an unprivileged peer reaches the daemon and the daemon, not the file mode, says no.
      config: localConfig(dir, { socket: { mode: '0666' }, roles: { agent: { gids: [4242] } }, limits: { max_body_bytes: 2048 } }),
    });
  });
  after(async () => {
    await daemon?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('creates its socket with the configured mode', () => {
    assert.equal(statSync(daemon.socketPath).mode & 0o777, 0o666);
  });

  it('GET /v1/health reports every check, and "failing" exactly when a host check fails', async () => {
    const answer = await daemon.call('GET', '/v1/health');
    const health = answer.body as { status: string; backend: string; checks: Record<string, { ok: boolean; detail: string }> };
    assert.deepEqual(Object.keys(health.checks).sort(), ['commands', 'cryptsetup', 'dm_crypt', 'key_manager', 'requests']);
    assert.equal(health.backend, 'local');
    assert.equal(health.checks['key_manager']?.ok, true);
    const hostOk = health.checks['cryptsetup']?.ok === true && health.checks['dm_crypt']?.ok === true;
    assert.equal(health.status, hostOk ? 'ok' : 'failing');
    assert.equal(answer.status, hostOk ? 200 : 503);
  });

  it('a peer with no role gets 403 E_PEER_FORBIDDEN naming its uid, before its body is read', async () => {
    const answer = await daemon.callAs(NOBODY, NOBODY, 'PUT', '/v1/volumes/v1', attachBody);
    assert.equal(answer.status, 403);
    const error = errorOf(answer);
    assert.equal(error.code, 'E_PEER_FORBIDDEN');
    assert.match(error.message, new RegExp(`uid ${NOBODY}`));
    assert.equal(answer.headers['connection'], 'close');
  });

  it('an agent (by gid) may read health but not the cache, which needs admin', async () => {
    const health = await daemon.callAs(NOBODY, 4242, 'GET', '/v1/health');
    assert.notEqual(health.status, 403);
    assert.equal(typeof (health.body as { status: string }).status, 'string');
    const cache = await daemon.callAs(NOBODY, 4242, 'GET', '/v1/cache');
    assert.equal(cache.status, 403);
    assert.match(errorOf(cache).message, /needs admin/);
  });

  it('unknown paths are 404 E_ROUTE_NOT_FOUND and wrong methods 405 E_METHOD_NOT_ALLOWED', async () => {
    const missing = await daemon.call('GET', '/v2/volumes');
    assert.equal(missing.status, 404);
    assert.equal(errorOf(missing).code, 'E_ROUTE_NOT_FOUND');
    const wrong = await daemon.call('POST', '/v1/volumes/v1');
    assert.equal(wrong.status, 405);
    assert.equal(errorOf(wrong).code, 'E_METHOD_NOT_ALLOWED');
    assert.match(errorOf(wrong).message, /PUT, DELETE, GET/);
  });

  it('malformed JSON, unknown keys, bad device paths and bad names are 400 E_BAD_REQUEST with every problem listed', async () => {
    const notJson = await daemon.call('PUT', '/v1/volumes/v1', undefined, { raw: '{"device":', headers: { 'content-type': 'application/json' } });
    assert.equal(notJson.status, 400);
    assert.equal(errorOf(notJson).code, 'E_BAD_REQUEST');
    const bad = await daemon.call('PUT', '/v1/volumes/v1', { ...attachBody, device: '/etc/passwd', colour: 'red', format: 'always' });
    assert.equal(bad.status, 400);
    const issues = (errorOf(bad).details['issues'] as Array<{ path: string; message: string }>).map((i) => i.path);
    assert.deepEqual(issues.sort(), ['', 'device', 'format'].sort());
    assert.match(errorOf(bad).message, /unknown key\(s\) colour/);
    const dotdot = await daemon.call('PUT', '/v1/volumes/v1', { ...attachBody, device: '/dev/../etc/shadow' });
    assert.equal(dotdot.status, 400);
    const badName = await daemon.call('PUT', '/v1/volumes/-rf', attachBody);
    assert.equal(badName.status, 404, 'a name the API cannot map is no route at all');
  });

  it('an unknown provider is 400 E_LUKS_INVALID_ARGUMENT; a key naming another backend is 400 E_KEY_BACKEND_MISMATCH', async () => {
    const provider = await daemon.call('PUT', '/v1/volumes/v1', { ...attachBody, provider: 'rot13' });
    assert.equal(provider.status, 400);
    assert.equal(errorOf(provider).code, 'E_LUKS_INVALID_ARGUMENT');
    const backend = await daemon.call('PUT', '/v1/volumes/v1', { ...attachBody, key: { id: attachBody.key.id, backend: 'barbican' } });
    assert.equal(backend.status, 400);
    assert.equal(errorOf(backend).code, 'E_KEY_BACKEND_MISMATCH');
  });

  it('a body over limits.max_body_bytes is 413 E_BODY_TOO_LARGE; a body where none belongs is 400', async () => {
    const big = await daemon.call('PUT', '/v1/volumes/v1', { ...attachBody, project_id: 'p'.repeat(4000) });
    assert.equal(big.status, 413);
    assert.equal(errorOf(big).code, 'E_BODY_TOO_LARGE');
    const extra = await daemon.call('GET', '/v1/volumes', { surprise: true });
    assert.equal(extra.status, 400);
  });

  it('attaching with a key the project does not have is 404 E_KEY_NOT_FOUND, audited with the key id', async () => {
    const answer = await daemon.call('PUT', '/v1/volumes/v1', attachBody);
    assert.equal(answer.status, 404);
    assert.equal(errorOf(answer).code, 'E_KEY_NOT_FOUND');
    // The audit file is written asynchronously: wait (bounded) for the line.
    await waitUntil('the audit line of the attach', () => auditLines(join(dir, 'audit.log')).some((l) => l['key_id'] === attachBody.key.id), { describe: () => JSON.stringify(auditLines(join(dir, 'audit.log'))) });
    const line = auditLines(join(dir, 'audit.log')).find((l) => l['key_id'] === attachBody.key.id);
    assert.equal(line?.['outcome'], 'E_KEY_NOT_FOUND');
    assert.equal(line?.['project_id'], 'p1');
    assert.equal(statSync(join(dir, 'audit.log')).mode & 0o777, 0o600);
  });

  it('an absent mapping: DELETE succeeds twice closing nothing (idempotent); GET is 404 E_VOLUME_NOT_FOUND, or says device-mapper is missing', async () => {
    for (let i = 0; i < 2; i += 1) {
      const detach = await daemon.call('DELETE', '/v1/volumes/nothing-here');
      assert.equal(detach.status, 200, detach.text);
      assert.deepEqual({ ...(detach.body as Record<string, unknown>), timings_ms: undefined }, { name: 'nothing-here', closed: false, deferred: false, timings_ms: undefined });
    }
    // Which host this is, decided before asking (never from the answer), so each branch asserts one exact outcome.
    // /proc/misc, not /dev/mapper/control: cryptsetup creates that node even where the kernel has no dm_mod.
    const hasDeviceMapper = /\bdevice-mapper$/m.test(readFileSync('/proc/misc', 'utf8'));
    const answer = await daemon.call('GET', '/v1/volumes/nothing-here');
    if (hasDeviceMapper) {
      assert.equal(answer.status, 404, answer.text);
      assert.equal(errorOf(answer).code, 'E_VOLUME_NOT_FOUND');
    } else {
      // GET asks the helper for the mapping's status, which cannot reach the kernel: the host's fault (503), never "absent".
      assert.equal(answer.status, 503, answer.text);
      assert.equal(errorOf(answer).code, 'E_DM_UNAVAILABLE');
      assert.match(errorOf(answer).message, /device-mapper is not available/);
    }
  });

  it('the cache endpoints answer stats, flush and evict for an admin', async () => {
    const stats = await daemon.call('GET', '/v1/cache');
    assert.equal(stats.status, 200);
    assert.equal(typeof (stats.body as { hits: number }).hits, 'number');
    assert.ok((stats.body as { misses: number }).misses >= 1, 'the failed attach above asked the backend');
    assert.deepEqual((await daemon.call('DELETE', '/v1/cache')).body, { flushed: 0 });
    assert.deepEqual((await daemon.call('DELETE', '/v1/cache/some-key')).body, { evicted: 0 });
  });

  it('GET /metrics is Prometheus text with attach outcomes and cache figures', async () => {
    const answer = await daemon.call('GET', '/metrics');
    assert.equal(answer.status, 200);
    assert.match(String(answer.headers['content-type']), /text\/plain/);
    assert.match(answer.text, /portcullis_operations_total\{operation="attach",outcome="E_KEY_NOT_FOUND"\} 1/);
    assert.match(answer.text, /portcullis_cache_misses \d+/);
  });

  it('a second daemon on the same socket refuses to start (E_SOCKET_IN_USE, exit 1) and the first keeps serving', () => {
    const second = spawnSync(process.execPath, [daemonMain, '--config', daemon.configPath], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(second.status, 1);
    assert.match(second.stderr, /E_SOCKET_IN_USE/);
    assert.ok(existsSync(daemon.socketPath));
  });

  it('the log and the audit file never carry key material, after an attach that fetched a key', async () => {
    // The key is fetched before the device is looked at: this attach holds the key, then fails on the device.
    const answer = await daemon.call('PUT', '/v1/volumes/v-known', { ...attachBody, key: { id: knownKeyId } });
    assert.equal(errorOf(answer).code, 'E_DEVICE_NOT_FOUND', answer.text);
    const outcomes = () => auditLines(join(dir, 'audit.log')).filter((l) => l['key_id'] === knownKeyId).map((l) => l['outcome']);
    await waitUntil('the audit line of the known key fetched', () => outcomes().length > 0, { describe: () => JSON.stringify(outcomes()) });
    assert.deepEqual(outcomes(), ['ok'], 'the key was fetched; only the device failed');
    await waitForMatch('the attach log line', () => daemon.log(), /"message":"attach"/);
    const haystacks = [
      { name: 'daemon log', data: daemon.log() },
      { name: 'audit.log', data: readFileSync(join(dir, 'audit.log')) },
    ];
    // Positive control: the scan finds the key where it is.
    assert.equal(findSecrets([knownKey], [{ name: 'control', data: `{"key":"${knownKey.toString('hex')}"}` }]).length, 1);
    const found = findSecrets([knownKey], haystacks);
    assert.deepEqual(found, [], describeSecrets(found, haystacks));
  });
});

describe('portcullisd start, config and stop', () => {
  const dir = mkdtempSync(join(tmpdir(), 'portcullisd-life-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('--check-config prints a summary and exits 0 for a good config', () => {
    const config = join(dir, 'good.yaml');
    writeFileSync(config, `key_manager:\n  backend: local\n  local:\n    path: ${dir}/k.db\n    kek_file: ${dir}/kek\nsocket:\n  path: ${dir}/s.sock\n`);
    const run = spawnSync(process.execPath, [daemonMain, '--config', config, '--check-config'], { encoding: 'utf8' });
    assert.equal(run.status, 0, run.stderr);
    assert.match(run.stdout, /config OK/);
    assert.match(run.stdout, /socket .*s\.sock \(mode 0660\)/);
    assert.equal(existsSync(`${dir}/s.sock`), false, 'checking starts nothing');
  });

  it('a bad config lists every problem and exits 3 without starting', () => {
    const config = join(dir, 'bad.yaml');
    writeFileSync(config, 'socket:\n  mode: "0999"\n  colour: blue\nlimits:\n  max_pending_requests: 0\n');
    const run = spawnSync(process.execPath, [daemonMain, '--config', config], { encoding: 'utf8' });
    assert.equal(run.status, 3);
    assert.match(run.stderr, /socket\.mode/);
    assert.match(run.stderr, /socket\.colour: unknown key/);
    assert.match(run.stderr, /limits\.max_pending_requests/);
  });

  it('refuses a socket directory that another user owns or may write, or that is a symlink (exit 1, E_SOCKET_SETUP)', () => {
    for (const plant of ['foreign owner', 'world-writable', 'symlink'] as const) {
      const base = mkdtempSync(join(dir, 'plant-'));
      const sockDir = join(base, 'sock');
      if (plant === 'symlink') {
        mkdirSync(join(base, 'real'));
        symlinkSync(join(base, 'real'), sockDir);
      } else {
        mkdirSync(sockDir);
        if (plant === 'foreign owner') chownSync(sockDir, NOBODY, NOBODY);
        else chmodSync(sockDir, 0o777);
      }
      const config = join(base, 'c.yaml');
      writeFileSync(config, `key_manager:\n  backend: local\n  local:\n    path: ${base}/k.db\n    kek_file: ${base}/kek\nsocket:\n  path: ${sockDir}/s.sock\n`);
      const run = spawnSync(process.execPath, [daemonMain, '--config', config], { encoding: 'utf8', timeout: 60_000 });
      assert.equal(run.status, 1, `${plant}: ${run.stderr}`);
      assert.match(run.stderr, /E_SOCKET_SETUP: The socket directory .* refusing to use it/, plant);
      assert.equal(existsSync(join(sockDir, 's.sock')), false, plant);
    }
  });

  it('replaces a stale socket, and on SIGTERM drains, removes its socket and exits 0', async () => {
    const sub = mkdtempSync(join(dir, 'stale-'));
    const stalePath = join(sub, 'portcullis.sock');
    // A socket file nobody listens on: what a kill -9 leaves behind.
    spawnSync(process.execPath, ['-e', `require('node:net').createServer().listen(${JSON.stringify(stalePath)}, () => process.kill(process.pid, 'SIGKILL'))`]);
    assert.ok(existsSync(stalePath));
    const d = await startDaemonProcess({ dir: sub, config: localConfig(sub) });
    assert.match(d.log(), /replaced a stale socket/);
    assert.equal(statSync(d.socketPath).mode & 0o777, 0o660);
    assert.equal(await d.stop('SIGTERM'), 0);
    assert.match(d.log(), /portcullisd stopped/);
    assert.equal(existsSync(d.socketPath), false);
  });

  it('SIGHUP reloads the config (new roles apply at once); a bad file is logged and the running config kept', async () => {
    // Its own top-level directory: an unprivileged peer must be able to reach the socket.
    const sub = mkdtempSync(join(tmpdir(), 'portcullisd-reload-'));
    const d = await startDaemonProcess({ dir: sub, config: localConfig(sub, { socket: { mode: '0666' } }) });
    try {
      assert.equal((await d.callAs(NOBODY, NOBODY, 'GET', '/v1/health')).status, 403);
      const text = readFileSync(d.configPath, 'utf8');
      writeFileSync(d.configPath, `${text}roles:\n  agent:\n    uids: [${NOBODY}]\n`);
      d.child.kill('SIGHUP');
      await waitForMatch('the reload log line', () => d.log(), /config reloaded/);
      assert.notEqual((await d.callAs(NOBODY, NOBODY, 'GET', '/v1/health')).status, 403);
      writeFileSync(d.configPath, 'limits:\n  max_pending_requests: -1\n');
      d.child.kill('SIGHUP');
      await waitForMatch('the failed reload log line', () => d.log(), /^(?=.*config reload failed)(?=.*limits\.max_pending_requests).*$/m);
      assert.notEqual((await d.callAs(NOBODY, NOBODY, 'GET', '/v1/health')).status, 403, 'the running config stays');
    } finally {
      await d.stop();
      rmSync(sub, { recursive: true, force: true });
    }
  });

  it('refuses to replace a path that is not a socket', () => {
    const sub = mkdtempSync(join(dir, 'file-'));
    writeFileSync(join(sub, 'portcullis.sock'), 'not a socket');
    const config = join(sub, 'c.yaml');
    writeFileSync(config, `key_manager:\n  backend: local\n  local:\n    path: ${sub}/k.db\n    kek_file: ${sub}/kek\nsocket:\n  path: ${sub}/portcullis.sock\n`);
    const run = spawnSync(process.execPath, [daemonMain, '--config', config], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(run.status, 1);
    assert.match(run.stderr, /E_SOCKET_SETUP: .*is not a socket; refusing/);
  });
});

describe('portcullisd under load', () => {
  it('answers 503 E_OVERLOADED with Retry-After once limits.max_pending_requests are in flight, and SIGTERM still stops it', async () => {
    // A fake for a fault a real Barbican cannot be made to produce on demand: it accepts and never answers.
    const held: Socket[] = [];
    let reached: () => void = () => undefined;
    const arrived = new Promise<void>((resolve) => (reached = resolve));
    const blackHole = createServer((socket) => {
      held.push(socket);
      reached();
    });
    await new Promise<void>((resolve) => blackHole.listen(0, '127.0.0.1', resolve));
    const port = (blackHole.address() as AddressInfo).port;
    const sub = mkdtempSync(join(tmpdir(), 'portcullisd-load-'));
    const d = await startDaemonProcess({
      dir: sub,
      config: {
        key_manager: { backend: 'barbican', barbican: { endpoint: `http://127.0.0.1:${port}`, timeout: 120, auth: { type: 'none' } } },
        retry: { attempts: 1 },
        limits: { max_pending_requests: 1, shutdown_grace_seconds: 1 },
        log: { format: 'json' },
      },
    });
    try {
      const body = { device: '/dev/loop0', provider: 'plain', key: { id: '11111111-1111-4111-8111-111111111111' }, project_id: 'p' };
      const first = d.call('PUT', '/v1/volumes/held', body).catch((err: unknown) => err);
      await arrived; // the first attach is admitted and waiting on the key manager
      const second = await d.call('PUT', '/v1/volumes/other', body);
      assert.equal(second.status, 503);
      assert.equal(errorOf(second).code, 'E_OVERLOADED');
      assert.equal(second.headers['retry-after'], '1');
      const reads = await d.call('GET', '/v1/cache');
      assert.equal(reads.status, 200, 'reads are not queued behind attaches');
      assert.equal(await d.stop('SIGTERM'), 0);
      assert.ok((await first) instanceof Error, 'the held request was cut off at the end of the grace period');
    } finally {
      await d.stop('SIGKILL');
      for (const s of held) s.destroy();
      blackHole.close();
      rmSync(sub, { recursive: true, force: true });
    }
  });
});
