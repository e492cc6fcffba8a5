/**
 * The two token cases nova brings (docs/nova.md), against a real Barbican
 * behind a real Keystone, counting the payload GETs that reach Barbican:
 * a re-attach with a new user token (nova sends one with every request), and
 * a restarted daemon asked with no token (nova's admin context on host boot).
 * And what must not change: another user of the project, a secret whose ACL
 * leaves the project out, a revoked token.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { validateConfig } from '../../src/config/load.js';
import type { CachingKeyManager } from '../../src/keyclient/cache.js';
import { openCachedKeyManager } from '../../src/keyclient/open.js';
import { plainAllocator } from '../../src/util/secure-memory.js';
import { startBarbican, type BarbicanServer } from '../fixtures/barbican-server.js';
import { startFaultProxy, type FaultProxy } from '../fixtures/fault-proxy.js';
import { startKeystone, type KeystoneServer } from '../fixtures/keystone-server.js';
import { rejectsWithCode } from '../helpers/errors.js';

const allocator = plainAllocator();
let keystone: KeystoneServer;
let barbican: BarbicanServer;
/** A recorder in front of Barbican: no faults, every request passes. */
let tap: FaultProxy;
const opened: CachingKeyManager[] = [];

before(async () => {
  keystone = await startKeystone();
  barbican = await startBarbican({ pipeline: 'keystone', keystone });
  tap = await startFaultProxy(barbican.url);
});
after(async () => {
  for (const km of opened) await km.close();
  await tap?.stop();
  await barbican?.stop();
  await keystone?.stop();
});

/** The daemon's stack as docs/nova.md configures it: portcullis' service user, and token identities resolved by Keystone (unless `shared` is false: today's per-token entries). */
async function daemonStack(shared = true): Promise<CachingKeyManager> {
  const user = keystone.users.portcullis;
  const auth = { type: 'password', auth_url: keystone.authUrl, username: user.name, password: user.password };
  const cache = { sweep_interval_seconds: 0, ...(shared ? { token_identity_url: keystone.authUrl } : {}) };
  const { config } = validateConfig({ key_manager: { backend: 'barbican', barbican: { endpoint: tap.url, timeout: 10, auth } }, cache }, 'nova-tokens');
  const km = await openCachedKeyManager(config, { allocator });
  opened.push(km);
  return km;
}

const payloadGets = (id: string) => tap.attempts.filter((x) => x.method === 'GET' && x.path === `/v1/secrets/${id}/payload`).length;
/** Every request about the secret (a refusal may come at its metadata, before any payload GET). */
const secretRequests = (id: string) => tap.attempts.filter((x) => x.path.startsWith(`/v1/secrets/${id}`)).length;
const alice = () => keystone.token(keystone.users.alice, keystone.projects.a.id);

/** A secret of project A made by alice (nova's volume key: cinder creates it with the user's token). */
async function volumeKey(km: CachingKeyManager): Promise<string> {
  return km.createKey({ projectId: keystone.projects.a.id, token: await alice() }, { algorithm: 'aes', length: 256 });
}

/** Barbican's ACL API, with alice's token: read only for `users`, the project's other members shut out. */
async function restrictTo(id: string, users: string[]): Promise<void> {
  const res = await fetch(`${barbican.url}/v1/secrets/${id}/acl`, {
    method: 'PUT',
    headers: { 'x-auth-token': await alice(), 'content-type': 'application/json' },
    body: JSON.stringify({ read: { users, 'project-access': false } }),
  });
  assert.equal(res.status, 200, await res.text());
}

describe("nova's tokens and the key cache, on Barbican behind Keystone", () => {
  it('a re-attach with a new token of the same user is served from the cache: 0 Barbican requests (per-token entries: 1)', async () => {
    const km = await daemonStack();
    const id = await volumeKey(km);
    const a = keystone.projects.a.id;
    assert.equal((await km.lookup({ projectId: a, token: await alice() }, id)).source, 'backend');
    assert.equal(payloadGets(id), 1);
    const again = await km.lookup({ projectId: a, token: await alice() }, id);
    assert.equal(again.source, 'cache');
    assert.equal(payloadGets(id), 1, 'the new token cost no Barbican request');

    const perToken = await daemonStack(false);
    await perToken.lookup({ projectId: a, token: await alice() }, id);
    assert.equal((await perToken.lookup({ projectId: a, token: await alice() }, id)).source, 'backend');
    assert.equal(payloadGets(id), 3, 'without token_identity_url every new token goes back to Barbican');
  });

  it("another user of the project is Barbican's to judge, and a per-secret ACL shutting the project out still holds", async () => {
    const km = await daemonStack();
    const id = await volumeKey(km);
    const a = keystone.projects.a.id;
    await restrictTo(id, [keystone.users.alice.id]);
    await km.get({ projectId: a, token: await alice() }, id);
    const asked = secretRequests(id);
    const other = await keystone.token(keystone.users.portcullis, a); // a member of A, not on the secret's ACL
    await rejectsWithCode(km.get({ projectId: a, token: other }, id), 'E_KEY_FORBIDDEN');
    assert.ok(secretRequests(id) > asked, "the other user's request went to Barbican, not to alice's entry");
    assert.equal((await km.lookup({ projectId: a, token: await alice() }, id)).source, 'cache');
  });

  it("a revoked token is refused even though its user's key is cached", async () => {
    const km = await daemonStack();
    const id = await volumeKey(km);
    const a = keystone.projects.a.id;
    await km.get({ projectId: a, token: await alice() }, id);
    const revoked = await alice();
    const res = await fetch(`${keystone.authUrl}/auth/tokens`, { method: 'DELETE', headers: { 'x-auth-token': revoked, 'x-subject-token': revoked } });
    assert.equal(res.status, 204);
    await rejectsWithCode(km.get({ projectId: a, token: revoked }, id), 'E_BACKEND_AUTH');
  });

  it("after a restart, no token: 1 Barbican request with the daemon's own identity, then the cache; an ACL that leaves it out is a refusal", async () => {
    const first = await daemonStack();
    const id = await volumeKey(first);
    const restricted = await volumeKey(first);
    await restrictTo(restricted, [keystone.users.alice.id]);
    const restarted = await daemonStack(); // a new process: an empty cache
    const a = keystone.projects.a.id;
    assert.equal((await restarted.lookup({ projectId: a }, id)).source, 'backend');
    assert.equal((await restarted.lookup({ projectId: a }, id)).source, 'cache');
    assert.equal(payloadGets(id), 1, 'one payload GET for the host-boot attach and its retries');
    await rejectsWithCode(restarted.get({ projectId: a }, restricted), 'E_KEY_FORBIDDEN');
  });
});
