/**
 * Interop with OpenStack's own clients on a real Barbican behind a real
 * Keystone: python3-barbicanclient and python3-castellan (what nova and
 * cinder use) write secrets that portcullis reads back byte-identical, and
 * the reverse. Driven through test/fixtures/servers/openstack_clients.py.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { barbicanBackend } from '../../src/keyclient/backends/barbican/backend.js';
import type { KeyManager, RequestContext } from '../../src/keyclient/key-manager.js';
import { objectOfType, type ObjectType } from '../../src/keyclient/objects/index.js';
import { plainAllocator } from '../../src/util/secure-memory.js';
import { startBarbican, type BarbicanServer } from '../fixtures/barbican-server.js';
import { startKeystone, type KeystoneServer } from '../fixtures/keystone-server.js';
import { fixturePath } from '../helpers/paths.js';

interface ClientAnswer {
  client_stored: string[];
  client_read: Array<{ payload_b64: string; secret_type: string; name: string | null; algorithm: string | null; bit_length: number | null }>;
  castellan_stored: string[];
  castellan_read: Array<{ class: string; payload_b64: string; name: string | null; algorithm: string | null; bit_length: number | null }>;
  castellan_created: string[];
}

let keystone: KeystoneServer;
let barbican: BarbicanServer;
let km: KeyManager;
let ctx: RequestContext;
const allocator = plainAllocator();

before(async () => {
  keystone = await startKeystone();
  barbican = await startBarbican({ pipeline: 'keystone', keystone });
  // Alice (creator in project A) on both sides, so both act in the same project.
  const alice = keystone.users.alice;
  km = await barbicanBackend.create(
    barbicanBackend.optionsSchema.parse({ endpoint: barbican.url, auth: { type: 'password', auth_url: keystone.authUrl, username: alice.name, password: alice.password, project_id: alice.projectId } }),
    { allocator },
  );
  ctx = { projectId: alice.projectId };
});
after(async () => {
  await km?.close();
  await barbican?.stop();
  await keystone?.stop();
});

/** Runs the OpenStack clients once with `request`; bounded at 60 s. */
function openstack(request: Record<string, unknown>): Promise<ClientAnswer> {
  const alice = keystone.users.alice;
  const input = JSON.stringify({ auth_url: keystone.authUrl, username: alice.name, password: alice.password, project_id: alice.projectId, endpoint: barbican.url, ...request });
  return new Promise((resolve, reject) => {
    const child = spawn('/usr/bin/python3', [fixturePath('servers', 'openstack_clients.py')], {
      env: { PATH: '/usr/bin:/bin', HOME: barbican.dir, LANG: 'C.UTF-8' },
      stdio: ['pipe', 'pipe', 'pipe'],
      timeout: 60_000,
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (chunk: Buffer) => out.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => err.push(chunk));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) reject(new Error(`openstack_clients.py exited ${String(code)}:\n${Buffer.concat(err).toString().slice(-3000)}`));
      else resolve(JSON.parse(Buffer.concat(out).toString()) as ClientAnswer);
    });
    child.stdin.end(input);
  });
}

const b64 = (bytes: Buffer) => bytes.toString('base64');
const fromB64 = (text: string) => Buffer.from(text, 'base64');
/** Binary on purpose: NUL, 0xff and bytes that are not UTF-8. */
const binary = () => Buffer.concat([Buffer.from([0x00, 0xff, 0xfe, 0x80, 0x0a, 0x0d]), randomBytes(58)]);

function object(type: ObjectType, bytes: Buffer, meta: Record<string, unknown> = {}) {
  const buf = allocator.alloc(bytes.length);
  buf.view().set(bytes);
  return objectOfType(type, meta, buf);
}

describe('interop with python3-barbicanclient', () => {
  it('secrets stored by barbicanclient read back byte-identical through portcullis, with type, name and algorithm', async () => {
    const items = [
      { name: 'bc-opaque', secret_type: 'opaque', bytes: binary() },
      { name: 'bc-symmetric', secret_type: 'symmetric', bytes: randomBytes(32), algorithm: 'aes', bit_length: 256 },
      { name: 'bc-passphrase', secret_type: 'passphrase', bytes: Buffer.from('pässwörd\u0000tail') },
    ];
    const answer = await openstack({
      client_store: items.map(({ bytes, ...rest }) => ({ ...rest, payload_b64: b64(bytes) })),
    });
    for (const [index, item] of items.entries()) {
      const ref = answer.client_stored[index] as string;
      const got = await km.get(ctx, ref);
      assert.deepEqual(Buffer.from(got.bytes()), item.bytes, item.name);
      assert.equal(got.type, item.secret_type);
      assert.equal(got.name, item.name);
      if (item.algorithm !== undefined) assert.deepEqual([got.algorithm, got.bitLength], [item.algorithm, item.bit_length]);
    }
  });

  it('a key portcullis created and binary bytes portcullis stored read back byte-identical through barbicanclient', async () => {
    const created = await km.createKey(ctx, { algorithm: 'aes', length: 256, name: 'pc-created' });
    const createdBytes = Buffer.from((await km.get(ctx, created)).bytes());
    const opaqueBytes = binary();
    const stored = await km.store(ctx, object('opaque', opaqueBytes, { name: 'pc-opaque' }));
    const symBytes = randomBytes(16);
    const sym = await km.store(ctx, object('symmetric', symBytes, { name: 'pc-sym', algorithm: 'aes', bitLength: 128 }));
    const answer = await openstack({ client_read: [created, stored, sym] });
    const [c, o, s] = answer.client_read;
    assert.deepEqual(fromB64(c?.payload_b64 ?? ''), createdBytes);
    assert.deepEqual([c?.secret_type, c?.algorithm, c?.bit_length, c?.name], ['symmetric', 'aes', 256, 'pc-created']);
    assert.deepEqual(fromB64(o?.payload_b64 ?? ''), opaqueBytes);
    assert.equal(o?.secret_type, 'opaque');
    assert.deepEqual(fromB64(s?.payload_b64 ?? ''), symBytes);
  });
});

describe('interop with python3-castellan (nova/cinder\'s key manager)', () => {
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const der = {
    private: rsa.privateKey.export({ type: 'pkcs8', format: 'der' }),
    public: rsa.publicKey.export({ type: 'spki', format: 'der' }),
    certificate: readFileSync(fixturePath('contract-cert.der')),
  };

  it('objects Castellan stored (keys, passphrase, PEM-converted key pairs and certificate) read back identical through portcullis', async () => {
    const items: Array<{ type: ObjectType; bytes: Buffer; algorithm?: string; bit_length?: number }> = [
      { type: 'symmetric', bytes: randomBytes(32), algorithm: 'AES', bit_length: 256 },
      { type: 'passphrase', bytes: Buffer.from('castellan passphrase') },
      { type: 'opaque', bytes: binary() },
      { type: 'private', bytes: der.private, algorithm: 'RSA', bit_length: 2048 },
      { type: 'public', bytes: der.public, algorithm: 'RSA', bit_length: 2048 },
      { type: 'certificate', bytes: der.certificate },
    ];
    const answer = await openstack({ castellan_store: items.map((i) => ({ ...i, name: `castellan-${i.type}`, payload_b64: b64(i.bytes) })) });
    for (const [index, item] of items.entries()) {
      const got = await km.get(ctx, answer.castellan_stored[index] as string);
      assert.equal(got.type, item.type);
      assert.deepEqual(Buffer.from(got.bytes()), item.bytes, item.type);
    }
  });

  it('objects portcullis stored, and a key it created, read back identical through Castellan; a key Castellan ordered reads back through portcullis', async () => {
    const types = ['symmetric', 'passphrase', 'opaque', 'private', 'public', 'certificate'] as const;
    const bytes: Record<(typeof types)[number], Buffer> = {
      symmetric: randomBytes(32),
      passphrase: Buffer.from('portcullis passphrase'),
      opaque: binary(),
      private: der.private,
      public: der.public,
      certificate: der.certificate,
    };
    const ids = [];
    for (const type of types) {
      const meta = type === 'symmetric' ? { algorithm: 'aes', bitLength: 256 } : type === 'private' || type === 'public' ? { algorithm: 'rsa', bitLength: 2048 } : {};
      ids.push(await km.store(ctx, object(type, bytes[type], { name: `pc-${type}`, ...meta })));
    }
    const created = await km.createKey(ctx, { algorithm: 'aes', length: 256 });
    const answer = await openstack({ castellan_read: [...ids, created], castellan_create_key: 1 });
    const classes = { symmetric: 'SymmetricKey', passphrase: 'Passphrase', opaque: 'OpaqueData', private: 'PrivateKey', public: 'PublicKey', certificate: 'X509' };
    for (const [index, type] of types.entries()) {
      const read = answer.castellan_read[index];
      assert.equal(read?.class, classes[type]);
      assert.deepEqual(fromB64(read?.payload_b64 ?? ''), bytes[type], type);
    }
    const createdRead = answer.castellan_read[types.length];
    assert.deepEqual(fromB64(createdRead?.payload_b64 ?? ''), Buffer.from((await km.get(ctx, created)).bytes()));
    const ordered = await km.get(ctx, answer.castellan_created[0] as string);
    assert.equal(ordered.bytes().length, 32);
    assert.equal(ordered.name, 'castellan-made');
  });
});
