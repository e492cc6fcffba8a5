/**
 * The barbican backend against a real Barbican (noauth pipeline) on
 * 127.0.0.1: the shared contract, then what is Barbican's own. Faults a
 * real server cannot produce on demand come from fakes in
 * test/fixtures/servers/fakes.ts, named as such below.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { barbicanBackend } from '../../../../src/keyclient/backends/barbican/backend.js';
import type { KeyManager, RequestContext } from '../../../../src/keyclient/key-manager.js';
import { objectOfType, type ObjectType } from '../../../../src/keyclient/objects/index.js';
import { plainAllocator } from '../../../../src/util/secure-memory.js';
import { startBarbican, type BarbicanServer } from '../../../fixtures/barbican-server.js';
import { freePort } from '../../../fixtures/servers/process.js';
import { rejectsWithCode } from '../../../helpers/errors.js';
import { keyManagerContract } from '../../contract.js';

const allocator = plainAllocator();
let barbican: BarbicanServer;
// Two servers at once: the main one, and one the tests stop and restart. Its
// max_limit_paging of 2 makes every list() page for real.
let spare: BarbicanServer;
before(async () => {
  [barbican, spare] = await Promise.all([
    startBarbican({ pipeline: 'noauth' }),
    startBarbican({ pipeline: 'noauth', extraConf: { DEFAULT: { max_limit_paging: '2' } } }),
  ]);
});
after(async () => Promise.all([barbican?.stop(), spare?.stop()]));

function openBarbican(options: Record<string, unknown>): Promise<KeyManager> {
  return barbicanBackend.create(barbicanBackend.optionsSchema.parse(options), { allocator });
}

keyManagerContract({
  name: 'barbican (noauth pipeline)',
  open: () => openBarbican({ endpoint: barbican.url }),
  projectA: () => ({ projectId: 'project-a' }),
  projectB: () => ({ projectId: 'project-b' }),
});

const a: RequestContext = { projectId: 'project-a' };

/** What Barbican itself holds, read without portcullis. */
async function raw(path: string, accept = 'application/json'): Promise<{ status: number; body: Buffer }> {
  const res = await fetch(`${barbican.url}/v1${path}`, { headers: { 'x-project-id': a.projectId, accept } });
  return { status: res.status, body: Buffer.from(await res.arrayBuffer()) };
}

async function rawStore(secret: Record<string, unknown>): Promise<string> {
  const res = await fetch(`${barbican.url}/v1/secrets`, {
    method: 'POST',
    headers: { 'x-project-id': a.projectId, 'content-type': 'application/json' },
    body: JSON.stringify(secret),
  });
  assert.equal(res.status, 201, await res.clone().text());
  return ((await res.json()) as { secret_ref: string }).secret_ref;
}

describe('barbican ids', () => {
  let km: KeyManager;
  before(async () => (km = await openBarbican({ endpoint: barbican.url })));
  after(async () => km.close());

  it('createKey() and store() return bare UUIDs', async () => {
    const id = await km.createKey(a, { algorithm: 'aes', length: 256 });
    assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
  });

  it('get() and delete() accept a secret href as well as a bare UUID, upper case too', async () => {
    const id = await km.createKey(a, { algorithm: 'aes', length: 128 });
    const viaHref = await km.get(a, `${barbican.url}/v1/secrets/${id}`);
    const viaUpper = await km.get(a, id.toUpperCase());
    assert.equal(viaHref.id, id);
    assert.deepEqual(Buffer.from(viaHref.bytes()), Buffer.from(viaUpper.bytes()));
    await km.delete(a, `${barbican.url}/v1/secrets/${id}/`);
    await rejectsWithCode(km.get(a, id), 'E_KEY_NOT_FOUND');
  });

  it('an href naming another host is still fetched from the configured endpoint, never from that host', async () => {
    const id = await km.createKey(a, { algorithm: 'aes', length: 256 });
    const got = await km.get(a, `https://attacker.invalid:9311/v1/secrets/${id}`);
    assert.equal(got.id, id);
  });

  it('anything else is E_INVALID_ARGUMENT before any request is sent', async () => {
    const offline = await openBarbican({ endpoint: `http://127.0.0.1:${await freePort()}` });
    for (const bad of ['not-a-uuid', `${barbican.url}/v1/orders/${randomUUID()}`, '', '../secrets']) {
      await rejectsWithCode(offline.get(a, bad), 'E_INVALID_ARGUMENT');
      await rejectsWithCode(offline.delete(a, bad), 'E_INVALID_ARGUMENT');
    }
    await offline.close();
  });
});

describe('barbican secret types', () => {
  let km: KeyManager;
  before(async () => (km = await openBarbican({ endpoint: barbican.url })));
  after(async () => km.close());

  const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 });
  const der: Record<ObjectType, Buffer> = {
    symmetric: randomBytes(16),
    passphrase: Buffer.from('open sesame'),
    opaque: randomBytes(40),
    private: rsa.privateKey.export({ type: 'pkcs8', format: 'der' }),
    public: rsa.publicKey.export({ type: 'spki', format: 'der' }),
    certificate: Buffer.from([0x30, 0x03, 0x02, 0x01, 0x01]), // Barbican does not parse certificates; any DER SEQUENCE will do here.
  };

  for (const type of Object.keys(der) as ObjectType[]) {
    it(`store() of a ${type} object sets Barbican's secret_type to "${type}"`, async () => {
      const buf = allocator.alloc(der[type].length);
      buf.view().set(der[type]);
      const id = await km.store(a, objectOfType(type, { name: `types-${type}` }, buf));
      const meta = JSON.parse((await raw(`/secrets/${id}`)).body.toString()) as { secret_type: string };
      assert.equal(meta.secret_type, type);
      assert.equal((await km.get(a, id)).type, type);
    });
  }

  it('private keys, public keys and certificates are kept in Barbican as PEM (as Castellan keeps them) and come back as DER', async () => {
    const buf = allocator.alloc(der.private.length);
    buf.view().set(der.private);
    const id = await km.store(a, objectOfType('private', { name: 'pem-check', algorithm: 'rsa', bitLength: 1024 }, buf));
    const stored = await raw(`/secrets/${id}/payload`, 'application/octet-stream');
    assert.match(stored.body.toString(), /^-----BEGIN PRIVATE KEY-----\n/);
    assert.deepEqual(Buffer.from((await km.get(a, id)).bytes()), der.private);
  });

  it('a PKCS#1 "RSA PRIVATE KEY" PEM stored by someone else comes back as PKCS#8 DER', async () => {
    const pkcs1 = rsa.privateKey.export({ type: 'pkcs1', format: 'pem' }) as string;
    const ref = await rawStore({ name: 'pkcs1', secret_type: 'private', payload: Buffer.from(pkcs1).toString('base64'), payload_content_type: 'application/octet-stream', payload_content_encoding: 'base64' });
    assert.deepEqual(Buffer.from((await km.get(a, ref)).bytes()), der.private);
  });

  it('a secret Barbican made itself (RSA order) comes back as DER with algorithm and bit length', async () => {
    const pair = await km.createKeyPair(a, { algorithm: 'rsa', length: 1024 });
    const priv = await km.get(a, pair.privateKeyId);
    assert.equal(priv.type, 'private');
    assert.equal(priv.algorithm, 'rsa');
    assert.equal(priv.bitLength, 1024);
    assert.equal(priv.bytes()[0], 0x30);
  });

  it('createKey() of 512 bits orders an XTS key (two AES-256 keys), the only 512-bit AES Barbican makes', async () => {
    const id = await km.createKey(a, { algorithm: 'aes', length: 512 });
    const key = await km.get(a, id);
    assert.equal(key.bytes().length, 64);
    assert.equal(key.bitLength, 512);
  });

  it('list() pages through a Barbican that returns two secrets per page, and matches names exactly although Barbican uses LIKE', async () => {
    const km2 = await openBarbican({ endpoint: spare.url });
    const name = `page_${randomUUID()}`;
    const ids = [];
    for (let i = 0; i < 5; i += 1) ids.push(await km2.createKey(a, { algorithm: 'aes', length: 128, name }));
    await km2.createKey(a, { algorithm: 'aes', length: 128, name: name.replace('_', 'X') }); // "_" is a LIKE wildcard
    const listed = await km2.list(a, { name });
    assert.deepEqual(listed.map((o) => o.id).sort(), ids.sort());
    await km2.close();
  });

  it('createKey() and createKeyPair() refuse algorithms and lengths Barbican cannot make, before sending', async () => {
    await rejectsWithCode(km.createKey(a, { algorithm: 'aes', length: 384 }), 'E_INVALID_ARGUMENT');
    await rejectsWithCode(km.createKey(a, { algorithm: 'aes', length: 256, name: 'x'.repeat(256) }), 'E_INVALID_ARGUMENT');
    await rejectsWithCode(km.createKeyPair(a, { algorithm: 'rsa', length: 3000 }), 'E_INVALID_ARGUMENT');
    await rejectsWithCode(km.createKeyPair(a, { algorithm: 'ec', length: 256 }), 'E_INVALID_ARGUMENT');
  });

  it('store() refuses an empty payload and a key type whose bytes are not DER', async () => {
    await rejectsWithCode(km.store(a, objectOfType('opaque', {}, allocator.alloc(0))), 'E_INVALID_ARGUMENT');
    const notDer = allocator.alloc(4);
    notDer.view().set([1, 2, 3, 4]);
    await rejectsWithCode(km.store(a, objectOfType('public', {}, notDer)), 'E_INVALID_ARGUMENT');
  });
});

describe('barbican options', () => {
  it('default to Castellan\'s values', () => {
    const opts = barbicanBackend.optionsSchema.parse({ endpoint: 'http://127.0.0.1:9311' });
    assert.deepEqual(
      { ...opts },
      { endpoint: 'http://127.0.0.1:9311', api_version: 'v1', endpoint_type: 'public', number_of_retries: 60, retry_delay: 1, verify_ssl: true, timeout: 30, auth: { type: 'none' } },
    );
  });

  it('reject unknown keys, auth type none without an endpoint, and both project_name and project_id, with the path of each', () => {
    const unknown = barbicanBackend.optionsSchema.safeParse({ endpoint: 'http://127.0.0.1:9311', bogus: 1 });
    assert.ok(unknown.error?.issues.some((i) => i.code === 'unrecognized_keys' && i.keys.includes('bogus')), JSON.stringify(unknown.error?.issues));
    const both = barbicanBackend.optionsSchema.safeParse({ auth: { type: 'password', auth_url: 'http://k/v3', username: 'u', password: 'p', project_name: 'x', project_id: 'y' } });
    assert.ok(both.error?.issues.some((i) => i.path.join('.') === 'auth.project_id'));
    const none = barbicanBackend.optionsSchema.safeParse({});
    assert.ok(none.error?.issues.some((i) => i.path.join('.') === 'endpoint'));
    const badType = barbicanBackend.optionsSchema.safeParse({ endpoint: 'http://127.0.0.1:9311', auth: { type: 'kerberos' } });
    assert.ok(badType.error?.issues.some((i) => i.path.join('.') === 'auth.type'), JSON.stringify(badType.error?.issues));
  });

  it('read password_file and application_credential_secret_file, dropping the trailing newline', () => {
    const dir = mkdtempSync(join(tmpdir(), 'portcullis-opts-'));
    writeFileSync(join(dir, 'pw'), 's3cret\n', { mode: 0o600 });
    const pw = barbicanBackend.optionsSchema.parse({ auth: { type: 'password', auth_url: 'http://k:5000/v3', username: 'u', password_file: join(dir, 'pw') } });
    assert.equal(pw.auth.type === 'password' && pw.auth.password, 's3cret');
    const ac = barbicanBackend.optionsSchema.parse({ auth: { type: 'application_credential', auth_url: 'http://k:5000/v3', application_credential_id: 'id', application_credential_secret_file: join(dir, 'pw') } });
    assert.equal(ac.auth.type === 'application_credential' && ac.auth.application_credential_secret, 's3cret');
    const missing = barbicanBackend.optionsSchema.safeParse({ auth: { type: 'password', auth_url: 'http://k:5000/v3', username: 'u', password_file: join(dir, 'nope') } });
    assert.ok(missing.error?.issues.some((i) => i.path.join('.') === 'auth.password_file'));
    rmSync(dir, { recursive: true });
  });

  it('reject a password auth without any password, and a non-http URL', () => {
    const result = barbicanBackend.optionsSchema.safeParse({ endpoint: 'ftp://x', auth: { type: 'password', auth_url: 'http://k/v3', username: 'u' } });
    const paths = result.error?.issues.map((i) => i.path.join('.')) ?? [];
    assert.ok(paths.includes('endpoint') && paths.includes('auth.password'), JSON.stringify(paths));
  });
});
