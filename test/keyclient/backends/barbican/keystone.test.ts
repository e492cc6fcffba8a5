/**
 * The barbican backend behind a real Keystone: Barbican's keystone pipeline
 * (authtoken) on 127.0.0.1, the endpoint found in Keystone's catalog.
 * Catalog: RegionOne public/internal/admin → Barbican; RegionTwo public → a
 * closed port (to show region selection is real).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { barbicanBackend } from '../../../../src/keyclient/backends/barbican/backend.js';
import type { KeyManager, RequestContext } from '../../../../src/keyclient/key-manager.js';
import { plainAllocator } from '../../../../src/util/secure-memory.js';
import { startBarbican, type BarbicanServer } from '../../../fixtures/barbican-server.js';
import { startKeystone, type KeystoneServer } from '../../../fixtures/keystone-server.js';
import { startInterposer } from '../../../fixtures/servers/fakes.js';
import { freePort } from '../../../fixtures/servers/process.js';
import { rejectsWithCode } from '../../../helpers/errors.js';
import { keyManagerContract } from '../../contract.js';

const allocator = plainAllocator();
let keystone: KeystoneServer;
let barbican: BarbicanServer;
let deadUrl: string;

before(async () => {
  keystone = await startKeystone();
  barbican = await startBarbican({ pipeline: 'keystone', keystone });
  deadUrl = `http://127.0.0.1:${await freePort()}`;
  await keystone.registerKeyManager([
    { interface: 'public', url: barbican.url },
    { interface: 'internal', url: barbican.url },
    { interface: 'admin', url: barbican.url },
    { interface: 'public', url: deadUrl, region: 'RegionTwo' },
  ]);
});
after(async () => {
  await barbican?.stop();
  await keystone?.stop();
});

function open(options: Record<string, unknown>): Promise<KeyManager> {
  return barbicanBackend.create(barbicanBackend.optionsSchema.parse(options), { allocator });
}

/** portcullis' own service user (creator on projects A and B); tokens scoped per request project. */
const passwordAuth = () => ({ type: 'password', auth_url: keystone.authUrl, username: keystone.users.portcullis.name, password: keystone.users.portcullis.password });

keyManagerContract({
  name: 'barbican (keystone pipeline, password auth, endpoint from the catalog)',
  open: () => open({ region_name: 'RegionOne', auth: passwordAuth() }),
  projectA: () => ({ projectId: keystone.projects.a.id }),
  projectB: () => ({ projectId: keystone.projects.b.id }),
});

describe('barbican with keystone auth', () => {
  const projectA = (): RequestContext => ({ projectId: keystone.projects.a.id });

  it('application-credential auth creates and reads keys in the credential\'s project', async () => {
    const cred = await keystone.createApplicationCredential(keystone.users.alice, keystone.projects.a.id);
    const km = await open({ auth: { type: 'application_credential', auth_url: keystone.authUrl, application_credential_id: cred.id, application_credential_secret: cred.secret } });
    const id = await km.createKey(projectA(), { algorithm: 'aes', length: 256 });
    const key = await km.get(projectA(), id);
    assert.equal(key.bytes().length, 32);
    // Alice's own token (project A) sees it: the secret lives in project A.
    const token = await keystone.token(keystone.users.alice, keystone.projects.a.id);
    assert.deepEqual(Buffer.from((await km.get({ ...projectA(), token }, id)).bytes()), Buffer.from(key.bytes()));
    await km.close();
  });

  it('finds the endpoint by interface and region: RegionTwo\'s endpoint is used when asked for, a missing region is E_BACKEND_AUTH', async () => {
    const internal = await open({ endpoint_type: 'internal', region_name: 'RegionOne', auth: passwordAuth() });
    await internal.createKey(projectA(), { algorithm: 'aes', length: 128 });
    await internal.close();
    const regionTwo = await open({ region_name: 'RegionTwo', auth: passwordAuth() });
    const err = await rejectsWithCode(regionTwo.createKey(projectA(), { algorithm: 'aes', length: 128 }), 'E_BACKEND_UNAVAILABLE');
    assert.ok(err.message.includes(deadUrl), err.message);
    await regionTwo.close();
    const nowhere = await open({ endpoint_type: 'admin', region_name: 'RegionTwo', auth: passwordAuth() });
    const missing = await rejectsWithCode(nowhere.createKey(projectA(), { algorithm: 'aes', length: 128 }), 'E_BACKEND_AUTH');
    assert.match(missing.message, /no admin endpoint for service type key-manager in region RegionTwo/);
    await nowhere.close();
  });

  it('token pass-through: auth type token acts with the request\'s token, finds the catalog with it, and refuses a request without one', async () => {
    const km = await open({ auth: { type: 'token', auth_url: keystone.authUrl } });
    const token = await keystone.token(keystone.users.alice, keystone.projects.a.id);
    const id = await km.createKey({ ...projectA(), token }, { algorithm: 'aes', length: 256 });
    assert.equal((await km.get({ ...projectA(), token }, id)).bytes().length, 32);
    await rejectsWithCode(km.get(projectA(), id), 'E_INVALID_ARGUMENT');
    await km.close();
  });

  it('a request\'s token replaces the service credentials: project B\'s token gets E_KEY_FORBIDDEN on project A\'s secret', async () => {
    const km = await open({ auth: passwordAuth() });
    const id = await km.createKey(projectA(), { algorithm: 'aes', length: 256 });
    const bobToken = await keystone.token(keystone.users.bob, keystone.projects.b.id);
    await rejectsWithCode(km.get({ projectId: keystone.projects.b.id, token: bobToken }, id), 'E_KEY_FORBIDDEN');
    await rejectsWithCode(km.delete({ projectId: keystone.projects.b.id, token: bobToken }, id), 'E_KEY_FORBIDDEN');
    assert.equal((await km.get(projectA(), id)).bytes().length, 32);
    await km.close();
  });

  it('a garbage token is E_BACKEND_AUTH; so is a wrong service password', async () => {
    const km = await open({ region_name: 'RegionOne', auth: passwordAuth() });
    await km.list(projectA()); // resolves the endpoint with the service's own token
    await rejectsWithCode(km.list({ ...projectA(), token: 'gAAAAAgarbage' }), 'E_BACKEND_AUTH');
    await km.close();
    const wrong = await open({ endpoint: barbican.url, auth: { ...passwordAuth(), password: 'wrong' } });
    const err = await rejectsWithCode(wrong.list(projectA()), 'E_BACKEND_AUTH');
    assert.match(err.message, /Keystone at .* refused to authenticate user portcullis/);
    await wrong.close();
  });

  it('caches one service token per project, shared by concurrent requests', async () => {
    // The proxy only records: every request reaches the real Barbican.
    const proxy = await startInterposer(barbican.url);
    const km = await open({ endpoint: proxy.url, auth: passwordAuth() });
    const b: RequestContext = { projectId: keystone.projects.b.id };
    await Promise.all([...Array.from({ length: 10 }, () => km.list(projectA())), ...Array.from({ length: 10 }, () => km.list(b))]);
    const tokens = new Set(proxy.exchanges.map((e) => e.headers['x-auth-token']));
    assert.equal(tokens.size, 2, 'one token for A, one for B');
    await km.close();
    await proxy.stop();
  });

  it('re-authenticates once when Barbican rejects the cached service token, then gives E_BACKEND_AUTH', async () => {
    // FAKE: Barbican says 401 to a cached token only when it expires or is revoked; the proxy says it on demand.
    let rejectNext = 1;
    const proxy = await startInterposer(barbican.url, {
      request: () => (rejectNext-- > 0 ? { status: 401, body: '{"error": {"code": 401, "message": "The request you have made requires authentication."}}' } : undefined),
    });
    const km = await open({ endpoint: proxy.url, auth: passwordAuth() });
    await km.list(projectA());
    const [first, second] = proxy.exchanges.map((e) => e.headers['x-auth-token']);
    assert.notEqual(first, second, 'a fresh token after the 401');
    rejectNext = Infinity;
    const before = proxy.exchanges.length;
    await rejectsWithCode(km.list(projectA()), 'E_BACKEND_AUTH');
    assert.equal(proxy.exchanges.length - before, 2, 'one resend, not a loop');
    await km.close();
    await proxy.stop();
  });

  it('Keystone down is E_BACKEND_UNAVAILABLE naming Keystone; health() says so', async () => {
    const km = await open({ auth: { ...passwordAuth(), auth_url: `http://127.0.0.1:${await freePort()}/v3` } });
    const err = await rejectsWithCode(km.createKey(projectA(), { algorithm: 'aes', length: 256 }), 'E_BACKEND_UNAVAILABLE');
    assert.match(err.message, /^Keystone at http:\/\/127\.0\.0\.1:\d+ refused the connection/);
    assert.equal((err as unknown as { details: { requestSent: boolean } }).details.requestSent, false);
    assert.equal((await km.health()).ok, false);
    await km.close();
  });
});
