/**
 * nova's token cases end to end on this host (docs/nova.md): Debian's
 * os-brick `get_volume_encryptor` picks `portcullis_brick.Luks2Encryptor`,
 * whose `attach_volume(context)` asks a real portcullisd over its socket; the
 * daemon fetches the key from a real Barbican behind a real Keystone, through
 * a recording proxy that counts what reaches Barbican.
 *
 * No VM: the device does not exist. A request that names its key has the key
 * fetched (and audited) before the device is looked at (attach-pipeline.ts,
 * `known`), so each attach costs what a real one costs at Barbican, then fails
 * E_DEVICE_NOT_FOUND, which the encryptor raises as os-brick's
 * VolumeDeviceNotFound. The key fetch is read from the audit file.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startBarbican, type BarbicanServer } from '../fixtures/barbican-server.js';
import { auditLines, startDaemonProcess, type DaemonProcess } from '../fixtures/daemon.js';
import { startFaultProxy, type FaultProxy } from '../fixtures/fault-proxy.js';
import { startKeystone, type KeystoneServer, type KeystoneUser } from '../fixtures/keystone-server.js';
import { fetchJson } from '../fixtures/servers/process.js';
import { repoRoot } from '../helpers/paths.js';

/** nova's side: one attach_volume as nova's libvirt driver makes it, with oslo.context's RequestContext (or nova's admin context: no token, no project). */
const NOVA = `
import json, sys
from os_brick import encryptors
from oslo_context import context
req = json.loads(sys.argv[1])
if req['token'] is None:
    ctx = context.get_admin_context()
else:
    ctx = context.RequestContext(auth_token=req['token'], user_id=req['user'], project_id=req['project'], overwrite=False)
info = {'driver_volume_type': 'iscsi', 'serial': 'vol-1', 'data': {'device_path': req['device'], 'volume_id': 'vol-1'}}
enc = {'encryption_key_id': req['key'], 'control_location': 'front-end', 'cipher': 'aes-xts-plain64', 'key_size': 256,
       'provider': 'portcullis_brick.Luks2Encryptor'}
encryptor = encryptors.get_volume_encryptor('sudo nova-rootwrap /etc/nova/rootwrap.conf', info, None, **enc)
try:
    encryptor.attach_volume(ctx, **enc)
    out = {'types': None}
except Exception as e:
    out = {'types': ['%s.%s' % (c.__module__, c.__name__) for c in type(e).__mro__],
           'code': getattr(e, 'error_code', None), 'status': getattr(e, 'status', None), 'message': str(e)}
print(json.dumps(out))
`;
const DEVICE = '/dev/portcullis-no-such-disk';
const MAPPING = 'crypt-portcullis-no-such-disk';

interface Raised { types: string[] | null; code?: string | null; status?: number | null; message?: string }
interface Step { raised: Raised; barbican: string[]; audit: Record<string, unknown> | undefined }

let keystone: KeystoneServer;
let barbican: BarbicanServer;
/** A recorder in front of Barbican: no faults, every request passes. */
let tap: FaultProxy;
let daemon: DaemonProcess | undefined;
let dir: string;
let keyId: string;
/** A member (creator) of project A whom the secret's ACL leaves out. */
let carol: KeystoneUser;
const figures: Array<{ case: string; barbican: number; requests: string; source: string; raised: string }> = [];

const auditPath = () => join(dir, 'audit.log');
const stateDir = () => join(dir, 'brick-state');

function daemonConfig(): Record<string, unknown> {
  const user = keystone.users.portcullis;
  const auth = { type: 'password', auth_url: keystone.authUrl, username: user.name, password: user.password };
  return {
    key_manager: { backend: 'barbican', barbican: { endpoint: tap.url, timeout: 10, auth } },
    cache: { sweep_interval_seconds: 0, token_identity_url: keystone.authUrl },
    log: { format: 'json', audit_file: auditPath() },
  };
}

/** Runs NOVA in Debian's Python against the daemon's socket. */
function novaAttach(ctx: { token: string | null; user: string | null; project: string | null }): Promise<Raised> {
  const req = JSON.stringify({ ...ctx, key: keyId, device: DEVICE });
  const env = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C.UTF-8', PYTHONDONTWRITEBYTECODE: '1', PYTHONPATH: join(repoRoot, 'python'), PORTCULLIS_SOCKET: daemon?.socketPath ?? '', PORTCULLIS_BRICK_STATE_DIR: stateDir() };
  return new Promise((resolve, reject) => {
    // Not spawnSync: the recording proxy lives in this process's event loop.
    const child = spawn('/usr/bin/python3', ['-c', NOVA, req], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      const last = out.trim().split('\n').pop() ?? '';
      try {
        resolve(JSON.parse(last) as Raised);
      } catch {
        reject(new Error(`python exited ${code} without an answer:\n${out}\n${err}`));
      }
    });
  });
}

/** The key_access audit lines after the first `seen`, waiting (bounded) for `count` of them: winston writes the file after the answer. */
async function newAudits(seen: number, count: number): Promise<Array<Record<string, unknown>>> {
  const deadline = Date.now() + 5_000;
  for (;;) {
    const lines = auditLines(auditPath()).filter((l) => l['message'] === 'key_access').slice(seen);
    if (lines.length >= count || Date.now() > deadline) return lines;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** One attach from nova's side: what it raised, the requests that reached Barbican, the daemon's audit line (none when nothing reached the daemon). */
async function step(label: string, ctx: { token: string | null; user: string | null; project: string | null }, audited = true): Promise<Step> {
  const from = tap.attempts.length;
  const seen = auditLines(auditPath()).filter((l) => l['message'] === 'key_access').length;
  const raised = await novaAttach(ctx);
  const barbicanRequests = tap.attempts.slice(from).map((a) => `${a.method} ${a.path.replace(keyId, '{id}')}`);
  const audits = await newAudits(seen, audited ? 1 : 0);
  assert.ok(audits.length <= 1, `one key access per attach: ${JSON.stringify(audits)}`);
  const audit = audits[0];
  const source = audit === undefined ? '-' : String(audit['source'] ?? audit['outcome']);
  figures.push({ case: label, barbican: barbicanRequests.length, requests: barbicanRequests.join(', '), source, raised: `${raised.types?.[0] ?? 'nothing'} ${raised.code ?? ''}` });
  return { raised, barbican: barbicanRequests, audit };
}

const BRICK_NOT_FOUND = 'os_brick.exception.VolumeDeviceNotFound';
const KEY_ERROR = 'portcullis_brick.errors.PortcullisKeyError';
const BRICK_EXCEPTION = 'os_brick.exception.BrickException';

function assertDeviceNotFound(s: Step): void {
  assert.ok(s.raised.types?.includes(BRICK_NOT_FOUND), `expected ${BRICK_NOT_FOUND}: ${JSON.stringify(s.raised)}`);
  assert.deepEqual([s.raised.code, s.raised.status], ['E_DEVICE_NOT_FOUND', 422]);
  assert.match(s.raised.message ?? '', new RegExp(`PUT /v1/volumes/${MAPPING} failed: E_DEVICE_NOT_FOUND`));
}

const FETCH = ['GET /v1/secrets/{id}', 'GET /v1/secrets/{id}/payload'];

/** The requests that reached Barbican and the daemon's audit line of the key fetch, in one assertion so that a failure shows both. */
function assertFetched(s: Step, source: 'backend' | 'cache', barbicanRequests: string[]): void {
  const audit = s.audit ?? {};
  assert.deepEqual(
    { barbican: s.barbican, audit: { op: audit['op'], key_id: audit['key_id'], project_id: audit['project_id'], outcome: audit['outcome'], source: audit['source'] } },
    { barbican: barbicanRequests, audit: { op: 'get', key_id: keyId, project_id: keystone.projects.a.id, outcome: 'ok', source } },
  );
}

/** A user with creator + member on project A, through Keystone's admin API. */
async function memberOfA(name: string): Promise<KeystoneUser> {
  const headers = { 'x-auth-token': await keystone.token(keystone.admin, keystone.admin.projectId) };
  const password = `${name}-test-password`;
  const created = (await fetchJson(`${keystone.authUrl}/users`, { method: 'POST', headers, body: { user: { name, password, domain_id: 'default' } } })).body as { user: { id: string } };
  for (const role of ['creator', 'member']) {
    const found = (await fetchJson(`${keystone.authUrl}/roles?name=${role}`, { headers })).body as { roles: Array<{ id: string }> };
    await fetchJson(`${keystone.authUrl}/projects/${keystone.projects.a.id}/users/${created.user.id}/roles/${found.roles[0]?.id ?? ''}`, { method: 'PUT', headers });
  }
  return { id: created.user.id, name, password, projectId: keystone.projects.a.id };
}

/** cinder's volume key: a secret of project A created with alice's token, read ACL alice and portcullis' service user, the project's other members shut out. */
async function volumeKey(): Promise<string> {
  const headers = { 'x-auth-token': await keystone.token(keystone.users.alice, keystone.projects.a.id) };
  const body = { name: 'vol-1', secret_type: 'symmetric', algorithm: 'aes', bit_length: 256, mode: 'xts', payload: randomBytes(32).toString('base64'), payload_content_type: 'application/octet-stream', payload_content_encoding: 'base64' };
  const created = (await fetchJson(`${barbican.url}/v1/secrets`, { method: 'POST', headers, body })).body as { secret_ref: string };
  const id = created.secret_ref.split('/').pop() ?? '';
  const acl = { read: { users: [keystone.users.alice.id, keystone.users.portcullis.id], 'project-access': false } };
  await fetchJson(`${barbican.url}/v1/secrets/${id}/acl`, { method: 'PUT', headers, body: acl });
  return id;
}

before(async () => {
  keystone = await startKeystone();
  barbican = await startBarbican({ pipeline: 'keystone', keystone });
  tap = await startFaultProxy(barbican.url);
  dir = mkdtempSync(join(tmpdir(), 'portcullis-nova-tokens-'));
  carol = await memberOfA('carol');
  keyId = await volumeKey();
  daemon = await startDaemonProcess({ dir, config: daemonConfig() });
});
after(async () => {
  console.log(`Barbican requests per attach_volume (nova-tokens.test.ts):\n${figures.map((f) => `| ${f.case} | ${f.barbican} | ${f.requests || '-'} | ${f.source} | ${f.raised} |`).join('\n')}`);
  await daemon?.stop();
  await tap?.stop();
  await barbican?.stop();
  await keystone?.stop();
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
});

describe("nova's tokens through os-brick, portcullisd, Barbican and Keystone", () => {
  const a = () => keystone.projects.a.id;
  const alice = async () => ({ token: await keystone.token(keystone.users.alice, a()), user: keystone.users.alice.id, project: a() });

  it('the first attach with a user token fetches the key from Barbican: 2 requests (metadata, payload), audited source backend', async () => {
    const s = await step('attach, user token T1', await alice());
    assertFetched(s, 'backend', FETCH);
    assertDeviceNotFound(s);
  });

  it('a re-attach with a new token of the same user costs 0 Barbican requests: audited source cache', async () => {
    const s = await step('re-attach, new token T2, same user', await alice());
    assertFetched(s, 'cache', []);
    assertDeviceNotFound(s);
  });

  it("another member of the project, left out by the secret's ACL, is sent to Barbican and refused: E_KEY_FORBIDDEN as PortcullisKeyError", async () => {
    const s = await step("re-attach, another user's token (ACL excludes)", { token: await keystone.token(carol, a()), user: carol.id, project: a() });
    assert.deepEqual(
      { barbican: s.barbican, audit: s.audit?.['outcome'], code: s.raised.code, status: s.raised.status },
      { barbican: ['GET /v1/secrets/{id}'], audit: 'E_KEY_FORBIDDEN', code: 'E_KEY_FORBIDDEN', status: 403 },
    );
    assert.ok(s.raised.types?.includes(KEY_ERROR) && s.raised.types.includes(BRICK_EXCEPTION), JSON.stringify(s.raised));
  });

  it("after a daemon restart, nova's admin context (no token, no project): the encryptor's recorded project, 2 Barbican requests with the daemon's identity, then 0", async () => {
    assert.equal(await daemon?.stop(), 0);
    daemon = await startDaemonProcess({ dir, config: daemonConfig() });

    // Nothing recorded the project yet (every attach above failed): refused before the daemon is asked.
    const none = await step('no token, no project recorded', { token: null, user: null, project: null }, false);
    assert.deepEqual({ barbican: none.barbican, audit: none.audit, code: none.raised.code }, { barbican: [], audit: undefined, code: 'E_NO_PROJECT' });
    assert.ok(none.raised.types?.includes(KEY_ERROR), JSON.stringify(none.raised));

    // What the encryptor writes after a successful attach (only the host's device was missing here).
    mkdirSync(stateDir(), { recursive: true, mode: 0o700 });
    writeFileSync(join(stateDir(), createHash('sha256').update(keyId).digest('hex')), a());
    const boot = await step('daemon restarted, admin context, no token', { token: null, user: null, project: null });
    assertFetched(boot, 'backend', FETCH);
    assertDeviceNotFound(boot);

    const again = await step('again, no token', { token: null, user: null, project: null });
    assertFetched(again, 'cache', []);
    assertDeviceNotFound(again);
  });
});
