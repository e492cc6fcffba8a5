/**
 * Managed objects: metadata frozen, the secret reachable only through
 * bytes(), zeroized read from the shared prototype's getter.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { makeManagedObject, symmetricKey } from '../../src/keyclient/objects/index.js';
import { plainAllocator } from '../../src/util/secure-memory.js';
import { throwsWithCode } from '../helpers/errors.js';

describe('makeManagedObject()', () => {
  const allocator = plainAllocator();
  const secret = () => {
    const buf = allocator.alloc(4);
    buf.view().set([1, 2, 3, 4]);
    return buf;
  };

  it('makeManagedObject() reports zeroized false until zeroize(), then true, and bytes() throws E_OBJECT_WIPED', () => {
    const key = symmetricKey({ id: 'k', algorithm: 'AES', bitLength: 32 }, secret());
    assert.equal(key.zeroized, false);
    assert.deepEqual([...key.bytes()], [1, 2, 3, 4]);
    key.zeroize();
    assert.equal(key.zeroized, true);
    throwsWithCode(() => key.bytes(), 'E_OBJECT_WIPED');
    key.zeroize();
  });

  it('makeManagedObject() freezes the object and exposes no own property that holds the secret', () => {
    const key = makeManagedObject('symmetric', { id: 'k', algorithm: 'AES', bitLength: 32 }, secret());
    assert.equal(Object.isFrozen(key), true);
    assert.deepEqual(Reflect.ownKeys(key), ['id', 'algorithm', 'bitLength', 'type', 'metadataOnly', 'bytes', 'zeroize']);
    assert.equal(key.algorithm, 'aes');
    const copy: Record<string, unknown> = { ...key };
    assert.ok(!Object.values(copy).some((v) => typeof v === 'object' && v !== null && 'view' in v), 'a spread copy carries no SecretBuffer');
    // bytes() and zeroize() work detached from the object, as closures.
    const { bytes, zeroize } = key;
    assert.equal(bytes().length, 4);
    zeroize();
    assert.equal(key.zeroized, true);
  });

  it('makeManagedObject() without a secret is metadata-only: bytes() throws E_METADATA_ONLY, zeroized stays false', () => {
    const meta = makeManagedObject('symmetric', { id: 'k' }, undefined);
    assert.equal(meta.metadataOnly, true);
    throwsWithCode(() => meta.bytes(), 'E_METADATA_ONLY');
    meta.zeroize();
    assert.equal(meta.zeroized, false);
  });
});
