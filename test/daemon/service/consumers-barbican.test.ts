/**
 * Barbican secret consumers through the service core: a real Keystone and a
 * real Barbican 15 (keystone pipeline, API microversion 1.1), the volumes
 * and ephemeral services over the fake host (service-kit.ts). What Barbican
 * holds is read with Barbican's own API; what reached it is counted by a
 * pass-through proxy in front of it.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startBarbican, type BarbicanServer } from '../../fixtures/barbican-server.js';
import { startKeystone, type KeystoneServer } from '../../fixtures/keystone-server.js';
import { startInterposer, type InterposerHooks } from '../../fixtures/servers/fakes.js';
import { waitUntil } from '../../helpers/wait.js';
import { peer, serviceKit, type ServiceKit } from './service-kit.js';

let keystone: KeystoneServer;
let barbican: BarbicanServer;
let tap: Awaited<ReturnType<typeof startInterposer>>;
/** Per test: how the proxy rewrites (FAKE answers for what Barbican 15 will not do on demand). */
let hooks: InterposerHooks = {};

before(async () => {
  keystone = await startKeystone();
  barbican = await startBarbican({ pipeline: 'keystone', keystone });
  tap = await startInterposer(barbican.url, { request: (e) => hooks.request?.(e), response: (e, a) => hooks.response?.(e, a) });
});
after(async () => {
  await tap?.stop();
  await barbican?.stop();
  await keystone?.stop();
});

const projectA = () => keystone.projects.a.id;

async function kit(): Promise<ServiceKit> {
  const auth = { type: 'password', auth_url: keystone.authUrl, username: keystone.users.portcullis.name, password: keystone.users.portcullis.password };
  return serviceKit({
    keyManager: { backend: 'barbican', barbican: { endpoint: tap.url, auth } },
    devices: { '/dev/vdb': { rdev: '253:16' }, '/dev/vdc': { rdev: '253:32' }, '/dev/vdd': { rdev: '253:48' }, '/dev/vde': { rdev: '253:64' }, '/dev/vdf': { rdev: '253:80' } },
  });
}

const attachBody = (device: string, keyId: string) => ({
  device, key: { id: keyId }, project_id: projectA(), provider: 'luks2', format: 'if-blank' as const, symlink: false, read_only: false, allow_discards: false,
});

interface Consumer {
  service: string;
  resource_type: string;
  resource_id: string;
}

/** The secret's consumers as Barbican lists them (microversion 1.1), asked directly with Alice's token. */
async function consumers(secretId: string): Promise<Consumer[]> {
  const token = await keystone.token(keystone.users.alice, projectA());
  const res = await fetch(`${barbican.url}/v1/secrets/${secretId}/consumers`, { headers: { 'x-auth-token': token, 'openstack-api-version': 'key-manager 1.1', accept: 'application/json' } });
  assert.equal(res.status, 200, await res.clone().text());
  const body = (await res.json()) as { consumers: Consumer[] };
  return body.consumers.map((c) => ({ service: c.service, resource_type: c.resource_type, resource_id: c.resource_id }));
}

const consumerRequests = (method: string, secretId: string) => tap.exchanges.filter((e) => e.method === method && e.path === `/v1/secrets/${secretId}/consumers`).length;

describe('secret consumers (Barbican 15, keystone pipeline)', () => {
  it('an attach registers portcullis/volume/NAME once; a warm re-attach sends nothing; a detach removes it', async () => {
    const k = await kit();
    try {
      const keyId = await k.keys.createKey({ projectId: projectA() }, { algorithm: 'aes', length: 512 });
      const startAll = tap.exchanges.length;
      await k.volumes.attach('vol-c1', attachBody('/dev/vdb', keyId), peer);
      const coldRequests = tap.exchanges.slice(startAll).map((e) => `${e.method} ${e.path}`);
      assert.deepEqual(await consumers(keyId), [{ service: 'portcullis', resource_type: 'volume', resource_id: 'vol-c1' }]);
      assert.equal(consumerRequests('POST', keyId), 1);
      const warmFrom = tap.exchanges.length;
      for (let i = 0; i < 3; i += 1) assert.equal((await k.volumes.attach('vol-c1', attachBody('/dev/vdb', keyId), peer)).opened, false);
      assert.deepEqual(tap.exchanges.slice(warmFrom).map((e) => `${e.method} ${e.path}`), [], 'three warm re-attaches send Barbican nothing');
      process.stdout.write(`# cold attach requests to Barbican: ${coldRequests.length} (${coldRequests.join(', ')})\n`);
      await k.volumes.detach('vol-c1', { deferred: false });
      assert.deepEqual(await consumers(keyId), []);
      assert.equal(consumerRequests('DELETE', keyId), 1);
      // Detached already: no record, nothing to remove, nothing sent.
      await k.volumes.detach('vol-c1', { deferred: false });
      assert.equal(consumerRequests('DELETE', keyId), 1);
    } finally {
      await k.close();
    }
  });

  it('after a restart the first attach registers again (one POST, still one consumer), and a detach still removes it', async () => {
    const k = await kit();
    try {
      const keyId = await k.keys.createKey({ projectId: projectA() }, { algorithm: 'aes', length: 512 });
      await k.volumes.attach('vol-c2', attachBody('/dev/vdc', keyId), peer);
      const restarted = k.restart();
      // What adopt() does at start on a real kernel (the *.vm tests); the fake host lists no mappings, so the record is handed over here.
      restarted.registry.set('vol-c2', k.registry.get('vol-c2') ?? assert.fail('no record'));
      const posts = consumerRequests('POST', keyId);
      await restarted.volumes.attach('vol-c2', attachBody('/dev/vdc', keyId), peer);
      await restarted.volumes.attach('vol-c2', attachBody('/dev/vdc', keyId), peer);
      assert.equal(consumerRequests('POST', keyId), posts + 1, 'one registration per (secret, volume) per daemon lifetime');
      assert.deepEqual(await consumers(keyId), [{ service: 'portcullis', resource_type: 'volume', resource_id: 'vol-c2' }], 'Barbican keeps one consumer, not two');
      await restarted.volumes.detach('vol-c2', { deferred: false });
      assert.deepEqual(await consumers(keyId), []);
    } finally {
      await k.close();
    }
  });

  it('Barbican 15 deletes a secret that has consumers (204, no 409); the later detach finds the consumer gone and succeeds', async () => {
    const k = await kit();
    try {
      const keyId = await k.keys.createKey({ projectId: projectA() }, { algorithm: 'aes', length: 512 });
      await k.volumes.attach('vol-c3', attachBody('/dev/vdd', keyId), peer);
      assert.equal((await consumers(keyId)).length, 1);
      const token = await keystone.token(keystone.users.alice, projectA());
      const res = await fetch(`${barbican.url}/v1/secrets/${keyId}`, { method: 'DELETE', headers: { 'x-auth-token': token, 'openstack-api-version': 'key-manager 1.1' } });
      assert.equal(res.status, 204, await res.text());
      const answer = await k.volumes.detach('vol-c3', { deferred: false });
      assert.equal(answer.closed, true);
      assert.ok(k.logs.some((l) => l.includes('"key_consumer"') && l.includes('"absent"')), 'the removal found nothing to remove');
    } finally {
      await k.close();
    }
  });

  it("an ephemeral disk's consumer is registered at attach, kept over a detach, removed at its erase", async () => {
    const k = await kit();
    try {
      const body = { device: '/dev/vde', project_id: projectA(), provider: 'luks2', key_scope: 'project' as const, read_only: false, allow_discards: false };
      const answer = await k.ephemeral.attach('inst1', 'disk0', body, peer);
      const keyId = answer.key_id as string;
      const consumer = { service: 'portcullis', resource_type: 'volume', resource_id: answer.name };
      assert.deepEqual(await consumers(keyId), [consumer]);
      await k.ephemeral.detach('inst1', 'disk0', false, undefined, peer);
      assert.deepEqual(await consumers(keyId), [consumer], 'a detached disk still uses its key');
      await k.ephemeral.detach('inst1', 'disk0', true, { project_id: projectA() }, peer);
      assert.deepEqual(await consumers(keyId), [], 'erased: the project key stays, its consumer goes');
    } finally {
      await k.close();
    }
  });

  it('a registration Barbican refuses fails no attach: logged and counted, and asked again at the next attach', async () => {
    const k = await kit();
    try {
      const keyId = await k.keys.createKey({ projectId: projectA() }, { algorithm: 'aes', length: 512 });
      // FAKE: Barbican will not fail one request on demand; the proxy answers 403 to the consumer POST.
      hooks = { request: (e) => (e.method === 'POST' && e.path.endsWith('/consumers') ? { status: 403, body: '{"title":"Forbidden","description":"policy"}' } : undefined) };
      const answer = await k.volumes.attach('vol-c4', attachBody('/dev/vdf', keyId), peer);
      assert.equal(answer.opened, true);
      await waitUntil('the warning line', () => k.logs.some((l) => l.includes('could not register portcullis as a consumer')));
      assert.match(await k.metricsText(), /portcullis_key_consumer_requests_total\{op="register",outcome="E_KEY_FORBIDDEN"\} 1/);
      assert.deepEqual(await consumers(keyId), []);
      hooks = {};
      await k.volumes.attach('vol-c4', attachBody('/dev/vdf', keyId), peer);
      assert.equal(consumerRequests('POST', keyId), 2, 'not remembered as registered after a failure');
      assert.equal((await consumers(keyId)).length, 1);
      await k.volumes.detach('vol-c4', { deferred: false });
    } finally {
      hooks = {};
      await k.close();
    }
  });

  it('a Barbican without microversion 1.1 is asked once, no consumer is sent, and that is logged once', async () => {
    // FAKE: only Barbican 15 is installed; the proxy answers GET /v1 as a pre-1.1 Barbican does (no max_version).
    hooks = {
      response: (e, a) => (e.method === 'GET' && e.path === '/v1' ? { status: 200, headers: { 'content-type': 'application/json' }, body: '{"version":{"id":"v1","status":"stable"}}' } : a),
    };
    const k = await kit();
    try {
      const keyId = await k.keys.createKey({ projectId: projectA() }, { algorithm: 'aes', length: 512 });
      const probes = () => tap.exchanges.filter((e) => e.method === 'GET' && e.path === '/v1').length;
      const before = probes();
      await k.volumes.attach('vol-c5', attachBody('/dev/vdb', keyId), peer);
      await k.volumes.detach('vol-c5', { deferred: false });
      await k.volumes.attach('vol-c5', attachBody('/dev/vdb', keyId), peer);
      await k.volumes.detach('vol-c5', { deferred: false });
      assert.equal(probes() - before, 1, 'the version is asked once');
      assert.equal(consumerRequests('POST', keyId) + consumerRequests('DELETE', keyId), 0);
      await waitUntil('the skip line', () => k.logs.some((l) => l.includes('does not record secret consumers')));
      assert.equal(k.logs.filter((l) => l.includes('does not record secret consumers')).length, 1, 'logged once');
    } finally {
      hooks = {};
      await k.close();
    }
  });
});
