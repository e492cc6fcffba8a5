/**
 * The backend-neutral KeyManager contract (Castellan's functional test case,
 * shared). Every backend's test file calls keyManagerContract() with a way to
 * open its manager and two projects; what a backend cannot do it declares in
 * `capabilities`, and the contract then checks that it refuses cleanly.
 */
import assert from 'node:assert/strict';
import { createPublicKey, generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import type { KeyManager, RequestContext } from '../../src/keyclient/key-manager.js';
import {
  objectOfType,
  type ManagedObject,
  type ObjectMetadata,
  type ObjectType,
} from '../../src/keyclient/objects/index.js';
import { plainAllocator, type SecureAllocator } from '../../src/util/secure-memory.js';
import { rejectsWithCode, throwsWithCode } from '../helpers/errors.js';
import { fixturePath } from '../helpers/paths.js';

export interface ContractTarget {
  /** Shown in test names. */
  name: string;
  /** Opens the manager under test; called once per contract run. */
  open(): Promise<KeyManager>;
  /** Contexts of two different projects (tenants). */
  projectA(): RequestContext | Promise<RequestContext>;
  projectB(): RequestContext | Promise<RequestContext>;
  /** For backends whose only key is fixed: its id. */
  fixedKeyId?: string;
  /** Called after close(); stop servers etc. */
  teardown?(): Promise<void>;
}

const certificateDer = readFileSync(fixturePath('contract-cert.der'));
const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const privateDer = rsa.privateKey.export({ type: 'pkcs8', format: 'der' });
const publicDer = rsa.publicKey.export({ type: 'spki', format: 'der' });

interface Sample {
  type: ObjectType;
  meta: ObjectMetadata;
  bytes: Buffer;
}

/** One sample of every object type, with the metadata each carries. */
function samples(): Sample[] {
  return [
    { type: 'symmetric', meta: { name: 'contract-sym', algorithm: 'aes', bitLength: 256 }, bytes: randomBytes(32) },
    { type: 'passphrase', meta: { name: 'contract-pass' }, bytes: Buffer.from('correct horse battery staple', 'utf8') },
    { type: 'opaque', meta: { name: 'contract-opaque' }, bytes: Buffer.concat([Buffer.from([0, 255, 0]), randomBytes(61)]) },
    { type: 'private', meta: { name: 'contract-priv', algorithm: 'rsa', bitLength: 2048 }, bytes: Buffer.from(privateDer) },
    { type: 'public', meta: { name: 'contract-pub', algorithm: 'rsa', bitLength: 2048 }, bytes: Buffer.from(publicDer) },
    { type: 'certificate', meta: { name: 'contract-cert' }, bytes: Buffer.from(certificateDer) },
  ];
}

function build(allocator: SecureAllocator, sample: Sample): ManagedObject {
  const buf = allocator.alloc(sample.bytes.length);
  buf.view().set(sample.bytes);
  return objectOfType(sample.type, sample.meta, buf);
}

export function keyManagerContract(target: ContractTarget): void {
  describe(`KeyManager contract: ${target.name}`, () => {
    let km: KeyManager;
    let a: RequestContext;
    let b: RequestContext;
    const allocator = plainAllocator();

    before(async () => {
      km = await target.open();
      a = await target.projectA();
      b = await target.projectB();
    });
    after(async () => {
      await km?.close();
      await target.teardown?.();
    });

    it('health() reports the backend usable', async () => {
      const health = await km.health();
      assert.equal(health.ok, true, health.detail);
      assert.equal(typeof health.detail, 'string');
    });

    it('createKey() makes an AES-256 key whose bytes come back from get()', async () => {
      const id = await km.createKey(a, { algorithm: 'aes', length: 256, name: 'contract-created' });
      assert.equal(typeof id, 'string');
      const key = await km.get(a, id);
      assert.equal(key.type, 'symmetric');
      assert.equal(key.algorithm, 'aes');
      assert.equal(key.bitLength, 256);
      assert.equal(key.bytes().length, 32);
      assert.ok(key.bytes().some((byte) => byte !== 0), 'a created key is not all zeros');
      key.zeroize();
      assert.equal(key.zeroized, true);
      throwsWithCode(() => key.bytes(), 'E_OBJECT_WIPED');
    });

    it('createKey() rejects an unknown algorithm or impossible length with E_INVALID_ARGUMENT', async () => {
      await rejectsWithCode(km.createKey(a, { algorithm: 'rot13', length: 256 }), 'E_INVALID_ARGUMENT');
      await rejectsWithCode(km.createKey(a, { algorithm: 'aes', length: 7 }), 'E_INVALID_ARGUMENT');
    });

    it('get() of an id that never existed is E_KEY_NOT_FOUND', async () => {
      await rejectsWithCode(km.get(a, randomUUID()), 'E_KEY_NOT_FOUND');
    });

    if (target.fixedKeyId !== undefined) {
      fixedOnly(target.fixedKeyId);
      return;
    }

    for (const sample of samples()) {
      it(`store() then get() returns a ${sample.type} object byte-identical, with its metadata`, async () => {
        const original = build(allocator, sample);
        const id = await km.store(a, original);
        assert.deepEqual(original.bytes(), sample.bytes, 'store() leaves the caller\'s object intact');
        const got = await km.get(a, id);
        assert.equal(got.type, sample.type);
        assert.equal(got.id, id);
        assert.equal(got.name, sample.meta.name);
        if (sample.meta.algorithm !== undefined) assert.equal(got.algorithm, sample.meta.algorithm);
        if (sample.meta.bitLength !== undefined) assert.equal(got.bitLength, sample.meta.bitLength);
        assert.deepEqual(Buffer.from(got.bytes()), sample.bytes);
        assert.ok(got.created instanceof Date && !Number.isNaN(got.created.getTime()), 'created is a date');
        got.zeroize();
        const again = await km.get(a, id);
        assert.deepEqual(Buffer.from(again.bytes()), sample.bytes, 'zeroizing one copy does not touch the stored object');
      });
    }

    it('get({metadataOnly}) returns type and metadata but no bytes', async () => {
      const id = await km.createKey(a, { algorithm: 'aes', length: 256, name: 'contract-meta' });
      const meta = await km.get(a, id, { metadataOnly: true });
      assert.equal(meta.metadataOnly, true);
      assert.equal(meta.type, 'symmetric');
      assert.equal(meta.name, 'contract-meta');
      throwsWithCode(() => meta.bytes(), 'E_METADATA_ONLY');
    });

    it('list() returns metadata-only objects, filtered by type and name', async () => {
      const name = `contract-list-${randomUUID()}`;
      const id = await km.createKey(a, { algorithm: 'aes', length: 256, name });
      const passId = await km.store(a, build(allocator, { type: 'passphrase', meta: { name }, bytes: Buffer.from('pw') }));
      const byName = await km.list(a, { name });
      assert.deepEqual(byName.map((o) => o.id).sort(), [id, passId].sort());
      assert.ok(byName.every((o) => o.metadataOnly));
      const symmetric = await km.list(a, { type: 'symmetric', name });
      assert.deepEqual(symmetric.map((o) => o.id), [id]);
      const all = await km.list(a, { type: 'passphrase' });
      assert.ok(all.some((o) => o.id === passId));
      assert.ok(all.every((o) => o.type === 'passphrase'));
    });

    it('delete() removes the object; a second delete and a get are E_KEY_NOT_FOUND', async () => {
      const id = await km.createKey(a, { algorithm: 'aes', length: 256 });
      await km.delete(a, id);
      await rejectsWithCode(km.get(a, id), 'E_KEY_NOT_FOUND');
      await rejectsWithCode(km.delete(a, id), 'E_KEY_NOT_FOUND');
    });

    it('another project cannot get, list or delete the object, and it survives the attempt', async () => {
      const name = `contract-tenant-${randomUUID()}`;
      const id = await km.createKey(a, { algorithm: 'aes', length: 256, name });
      await rejectsWithCode(km.get(b, id), 'E_KEY_NOT_FOUND', 'E_KEY_FORBIDDEN');
      await rejectsWithCode(km.get(b, id, { metadataOnly: true }), 'E_KEY_NOT_FOUND', 'E_KEY_FORBIDDEN');
      assert.deepEqual(await km.list(b, { name }), []);
      await rejectsWithCode(km.delete(b, id), 'E_KEY_NOT_FOUND', 'E_KEY_FORBIDDEN');
      const still = await km.get(a, id);
      assert.equal(still.bytes().length, 32);
    });

    it('createKeyPair() makes an RSA pair, or refuses with E_NOT_SUPPORTED', async () => {
      if (!km.capabilities.createKeyPair) {
        await rejectsWithCode(km.createKeyPair(a, { algorithm: 'rsa', length: 2048 }), 'E_NOT_SUPPORTED');
        return;
      }
      const pair = await km.createKeyPair(a, { algorithm: 'rsa', length: 2048, name: 'contract-pair' });
      const priv = await km.get(a, pair.privateKeyId);
      const pub = await km.get(a, pair.publicKeyId);
      assert.equal(priv.type, 'private');
      assert.equal(pub.type, 'public');
      assert.equal(pub.algorithm, 'rsa');
      assert.equal(pub.bitLength, 2048);
      const parsed = createPublicKey({ key: Buffer.from(pub.bytes()), format: 'der', type: 'spki' });
      assert.equal(parsed.asymmetricKeyDetails?.modulusLength, 2048);
    });

    it('close() is safe to call twice', async () => {
      const second = await target.open();
      await second.close();
      await second.close();
    });
  });

  function fixedOnly(keyId: string): void {
    // Fixed-key semantics (Nova's ConfKeyManager): one key, shared, undeletable.
    describe('fixed-key semantics', () => {
      let km: KeyManager;
      let a: RequestContext;
      before(async () => {
        km = await target.open();
        a = await target.projectA();
      });
      after(async () => km.close());

      it('createKey() returns the fixed id; get() gives the same bytes to every project', async () => {
        const id = await km.createKey(a, { algorithm: 'aes', length: 256 });
        assert.equal(id, keyId);
        const one = await km.get(a, id);
        const two = await km.get(await target.projectB(), id);
        assert.deepEqual(Buffer.from(one.bytes()), Buffer.from(two.bytes()));
      });

      it('store() of any other object is E_NOT_SUPPORTED; createKeyPair() too', async () => {
        const sample = samples()[1] as Sample;
        const alloc = plainAllocator();
        await rejectsWithCode(km.store(a, build(alloc, sample)), 'E_NOT_SUPPORTED');
        await rejectsWithCode(km.createKeyPair(a, { algorithm: 'rsa', length: 2048 }), 'E_NOT_SUPPORTED');
      });

      it('delete() of the fixed key keeps it (every volume depends on it)', async () => {
        await km.delete(a, keyId);
        assert.equal((await km.get(a, keyId)).bytes().length, 32);
        await rejectsWithCode(km.delete(a, randomUUID()), 'E_KEY_NOT_FOUND');
      });

      it('list() shows the one key, metadata-only', async () => {
        const listed = await km.list(a);
        assert.deepEqual(listed.map((o) => [o.id, o.metadataOnly]), [[keyId, true]]);
      });
    });
  }
}
