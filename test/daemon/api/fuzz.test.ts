/**
 * Property-based fuzzing of every endpoint of the socket API, against a real
 * portcullisd on the local keystore and real loop devices: mutated and random
 * JSON, wrong types, huge and deeply nested bodies, invalid UTF-8, odd names
 * in paths, device paths that are no block devices or lead elsewhere through
 * symlinks, bad query flags, and malformed HTTP as raw bytes.
 *
 * Every case must be refused: a 4xx in the API's error shape with a
 * registered E_ code, never a 5xx, never a bare status line. Afterwards the
 * daemon still answers, nothing was logged as an internal error, and no
 * device, file or link changed.
 *
 * PORTCULLIS_FUZZ_RUNS sets the number of cases across the file (default
 * 10,000; `make soak` runs 100,000). PORTCULLIS_FUZZ_SEED replays a failure
 * (fast-check prints the seed and path of any counterexample).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { stringify } from 'yaml';
import { startDaemonProcess, type DaemonProcess } from '../../fixtures/daemon.js';
import { repoRoot } from '../../helpers/paths.js';
import { assertRefused, casesRun, codesSeen, countCase, httpClient, parseReply, rawExchange } from './fuzz-kit.js';
import { sendAs } from './fuzz-peer.js';
import { rawRequest } from './fuzz-http.js';
import { bodylessRoutes, bodyRoutes, mutatedBody, notForEphemeral, oddPathRequest, randomBody, type FuzzWorld } from './fuzz-inputs.js';
import { makeDeviceWorld, type DeviceWorld } from './fuzz-world.js';

const RUNS = Number(process.env['PORTCULLIS_FUZZ_RUNS'] ?? '10000');
const SEED = process.env['PORTCULLIS_FUZZ_SEED'];
const MAX_BODY = 4096;
const NOBODY = 65534;
/** Each property's share of the cases. */
const share = { mutated: 0.28, random: 0.15, bodyless: 0.08, devices: 0.1, names: 0.15, raw: 0.19, nobody: 0.05 } as const;
const runsOf = (name: keyof typeof share): number => Math.ceil(RUNS * share[name]);
const params = (name: keyof typeof share): fc.Parameters<unknown> => ({ numRuns: runsOf(name), ...(SEED === undefined ? {} : { seed: Number(SEED) }), endOnFailure: true });

describe('socket API fuzz: bad input is refused in the API shape, touches nothing, crashes nothing', { skip: process.getuid?.() !== 0 ? 'needs root for loop devices' : false }, () => {
  let dir: string;
  let devices: DeviceWorld;
  let world: FuzzWorld;
  let daemon: DaemonProcess;
  let client: ReturnType<typeof httpClient>;
  let before_: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'portcullisd-fuzz-'));
    devices = makeDeviceWorld(dir);
    const keyManager = { backend: 'local', local: { path: join(dir, 'keystore.db'), kek_file: join(dir, 'kek') } };
    // A key in project p1, made through the CLI before the daemon starts: requests that name it get past the key.
    const cliConfig = join(dir, 'cli.yaml');
    writeFileSync(cliConfig, stringify({ key_manager: keyManager }));
    const keyId = execFileSync(process.execPath, [join(repoRoot, 'dist', 'src', 'cli', 'main.js'), '--config', cliConfig, 'key', 'create', '--project', 'p1'], { encoding: 'utf8' }).trim();
    world = { keyId, loops: devices.loops, oddDevices: devices.oddDevices };
    before_ = devices.fingerprint();
    daemon = await startDaemonProcess({
      dir,
      config: {
        key_manager: keyManager,
        log: { level: 'info', format: 'json' },
        // Short client timeouts: a generated request the parser is still waiting on ends in 408 soon.
        limits: { max_body_bytes: MAX_BODY, header_timeout_seconds: 2, body_timeout_seconds: 2 },
        // Open to every uid, so that the daemon, not the file mode, refuses a peer with no role.
        socket: { mode: '0666' },
      },
    });
    client = httpClient(daemon.socketPath);
  });

  after(async () => {
    client?.close();
    await daemon?.stop();
    devices?.cleanup();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
    const counts = [...casesRun.entries()].map(([k, v]) => `${k} ${v}`).join(', ');
    const codes = [...codesSeen.entries()].sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${v}`).join(', ');
    process.stdout.write(`# fuzz cases: ${[...casesRun.values()].reduce((a, b) => a + b, 0)} (${counts})\n# answers: ${codes}\n`);
  });

  const alive = (): void => assert.equal(daemon.child.exitCode, null, `portcullisd exited:\n${daemon.log().slice(-3000)}`);

  it('mutated bodies of every body route (wrong types, missing and unknown keys, odd strings, bad devices, absent keys) are refused', async () => {
    const cases = fc.constantFrom(...bodyRoutes).chain((route) => fc.tuple(fc.constant(route), mutatedBody(route.kind, route.schema, world)));
    await fc.assert(
      fc.asyncProperty(cases, async ([route, body]) => {
        countCase('mutated');
        const text = JSON.stringify(body);
        assertRefused(await client.call(route.method, route.path, text, { 'content-type': 'application/json' }), `${route.method} ${route.path} ${text.slice(0, 300)}`);
        alive();
      }),
      params('mutated'),
    );
  });

  it('random JSON, bytes that are not UTF-8, deep nesting and oversized bodies are refused on every body route', async () => {
    const cases = fc.constantFrom(...bodyRoutes).chain((route) => fc.tuple(fc.constant(route), randomBody(route.schema, MAX_BODY)));
    await fc.assert(
      fc.asyncProperty(cases, async ([route, { bytes: body }]) => {
        countCase('random');
        assertRefused(await client.call(route.method, route.path, body), `${route.method} ${route.path} ${JSON.stringify(body.subarray(0, 200).toString('latin1'))} (${body.length} bytes)`);
        alive();
      }),
      params('random'),
    );
  });

  it('a body where none belongs, and unknown, repeated or bad query flags, are refused on every route', async () => {
    const query = fc.oneof(
      fc.constantFrom('', '?deferred=maybe', '?defered=true', '?erasee=true', '?deferred=1&deferred=0', '?erase=yes', '?x', '?%00=1', '?deferred=%ff'),
      fc.tuple(fc.string({ minLength: 1, maxLength: 20 }), fc.string({ maxLength: 20 })).filter(([k]) => k !== 'deferred').map(([k, v]) => `?${encodeURIComponent(k)}=${encodeURIComponent(v)}`),
    );
    const body = fc.option(fc.oneof(fc.jsonValue({ maxDepth: 2 }).map((v) => JSON.stringify(v) ?? 'null'), fc.string({ minLength: 1 })), { nil: undefined });
    const cases = fc.tuple(fc.constantFrom(...bodylessRoutes), query, body).filter(([, q, b]) => (q !== '' || (b !== undefined && b.length > 0)));
    await fc.assert(
      fc.asyncProperty(cases, async ([[method, path], q, b]) => {
        countCase('bodyless');
        assertRefused(await client.call(method, `${path}${q}`, b), `${method} ${path}${q} body ${JSON.stringify(b?.slice(0, 100))}`);
        alive();
      }),
      params('bodyless'),
    );
  });

  it('device paths that are no block device, or lead elsewhere through symlinks, are 422 E_DEVICE_NOT_FOUND for every provider', async () => {
    const provider = fc.constantFrom('luks', 'luks2', 'plain', 'nop', 'LuksEncryptor', 'os_brick.encryptors.luks.Luks2Encryptor', 'CryptsetupEncryptor', 'NoOpEncryptor');
    const cases = fc.record({ ephemeral: fc.boolean(), device: fc.constantFrom(...world.oddDevices), provider, format: fc.constantFrom('never', 'if-blank'), symlink: fc.boolean(), read_only: fc.boolean() });
    await fc.assert(
      fc.asyncProperty(cases, async (c) => {
        countCase('devices');
        const [method, path, body] = c.ephemeral
          ? ['PUT', '/v1/ephemeral/fuzz-inst/disk0', { device: c.device, project_id: 'p1', provider: c.provider, key: { id: world.keyId }, read_only: c.read_only }]
          : ['PUT', '/v1/volumes/fuzz-dev', { device: c.device, project_id: 'p1', provider: c.provider, key: { id: world.keyId }, format: c.format, symlink: c.symlink, read_only: c.read_only }];
        const code = assertRefused(await client.call(method, path, JSON.stringify(body)), `${path} ${JSON.stringify(body)}`);
        // An ephemeral disk is LUKS2 only: any other provider is refused before its device is looked at. symlink: true
        // first reads the mapping's state (sysfs: absent here, with or without device-mapper), so it goes on to the
        // same device check as every other case.
        if (c.ephemeral && notForEphemeral(c.provider)) assert.equal(code, 'E_BAD_REQUEST', JSON.stringify(c));
        else assert.equal(code, 'E_DEVICE_NOT_FOUND', JSON.stringify(c));
        alive();
      }),
      params('devices'),
    );
  });

  it('odd names in paths (.., /, NUL, %2F, 300 bytes, unicode, symbols) are refused on every path-parameter route', async () => {
    await fc.assert(
      fc.asyncProperty(oddPathRequest(), async ({ method, path }) => {
        countCase('names');
        const reply = await rawExchange(daemon.socketPath, Buffer.from(`${method} ${path} HTTP/1.1\r\nHost: p\r\nContent-Length: 0\r\n\r\n`, 'utf8'));
        assert.ok(reply !== undefined, `no answer to ${method} ${JSON.stringify(path)}`);
        assertRefused(reply, `${method} ${JSON.stringify(path)}`);
        alive();
      }),
      params('names'),
    );
  });

  it('malformed HTTP (request line, headers, framing, 40 KiB of headers, random bytes) gets a JSON error too, never a bare status', async () => {
    await fc.assert(
      fc.asyncProperty(rawRequest(), async ({ bytes }) => {
        countCase('raw');
        const reply = await rawExchange(daemon.socketPath, bytes);
        const shown = JSON.stringify(bytes.subarray(0, 300).toString('latin1'));
        assert.ok(reply !== undefined, `no answer to ${shown}`);
        assertRefused(reply, shown);
        alive();
      }),
      params('raw'),
    );
  });

  it('a peer with no role is refused before anything of its request is acted on: 403, or the parser\'s own refusal', async () => {
    // One child process as uid nobody sends the whole batch (a process per case would cost more than the cases).
    const structured = fc.oneof(
      fc.constantFrom(...bodyRoutes).chain((route) => fc.tuple(fc.constant(route.method), fc.constant(route.path), mutatedBody(route.kind, route.schema, world).map((b) => JSON.stringify(b)))),
      oddPathRequest().map(({ method, path }) => [method, path, ''] as const),
      fc.constantFrom(...bodylessRoutes).map(([method, path]) => [method, path, ''] as const),
    ).map(([method, path, body]) => Buffer.from(`${method} ${path} HTTP/1.1\r\nHost: p\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`, 'utf8'));
    const batch = fc.sample(fc.oneof(structured, rawRequest().map((r) => r.bytes)), { numRuns: runsOf('nobody'), ...(SEED === undefined ? {} : { seed: Number(SEED) }) });
    const answers = await sendAs(NOBODY, NOBODY, daemon.socketPath, batch);
    assert.equal(answers.length, batch.length);
    for (const [i, bytes] of batch.entries()) {
      countCase('nobody');
      const shown = JSON.stringify(bytes.subarray(0, 200).toString('latin1'));
      const reply = parseReply(answers[i] ?? Buffer.alloc(0), true);
      assert.ok(reply !== undefined, `no answer to ${shown}`);
      const code = assertRefused(reply, shown);
      const error = (JSON.parse(reply.text) as { error: { message: string; details: Record<string, unknown> } }).error;
      // Before the role check only Node's parser, CONNECT and Expect are settled, and none of them reads a body.
      const beforeRoles = code === 'E_HEADERS_TOO_LARGE' || code === 'E_METHOD_NOT_ALLOWED' || code === 'E_CLIENT_TIMEOUT' || (code === 'E_BAD_REQUEST' && (typeof error.details['reason'] === 'string' || error.message.startsWith('Expect:')));
      assert.ok(code === 'E_PEER_FORBIDDEN' || beforeRoles, `a peer with no role got ${code} (${error.message}) for ${shown}`);
    }
    alive();
  });

  it('afterwards: the daemon answers health, logged no internal error, changed no device, file or link; and every case ran', async () => {
    const health = await client.call('GET', '/v1/health');
    assert.ok(health.status === 200 || health.status === 503, `health answered ${health.status}`);
    assert.match(JSON.parse(health.text).status as string, /^(ok|degraded|failing)$/);
    alive();
    assert.doesNotMatch(daemon.log(), /internal error|uncaught|unhandled/i, 'the log of the fuzz run');
    assert.equal(devices.fingerprint(), before_, 'devices, backing files and /dev entries are as before');
    const total = [...casesRun.values()].reduce((a, b) => a + b, 0);
    assert.ok(total >= RUNS, `${total} cases ran, expected at least ${RUNS}`);
  });
});
