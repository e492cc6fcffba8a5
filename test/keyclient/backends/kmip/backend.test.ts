/**
 * The kmip backend against a real PyKMIP server on 127.0.0.1: the shared
 * contract (projects kept apart by portcullis on one service certificate),
 * then what is KMIP's own.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { kmipBackend, type KmipKeyManager } from '../../../../src/keyclient/backends/kmip/backend.js';
import type { KeyManager } from '../../../../src/keyclient/key-manager.js';
import { plainAllocator } from '../../../../src/util/secure-memory.js';
import { startKmip, type KmipServer } from '../../../fixtures/kmip-server.js';
import { rejectsWithCode } from '../../../helpers/errors.js';
import { keyManagerContract } from '../../contract.js';

const allocator = plainAllocator();
let kmip: KmipServer;
before(async () => {
  kmip = await startKmip();
});
after(async () => kmip?.stop());

async function open(extra: Record<string, unknown> = {}, cert = kmip.client): Promise<KmipKeyManager> {
  return (await kmipBackend.create(kmipBackend.optionsSchema.parse(kmip.options(cert, extra)), { allocator })) as KmipKeyManager;
}

// Twice: as negotiated (PyKMIP and portcullis agree on KMIP 2.0), and pinned to 1.2 (1.x attribute encoding).
keyManagerContract({
  name: 'kmip (PyKMIP, negotiated: KMIP 2.0)',
  open: () => open(),
  projectA: () => ({ projectId: 'project-a' }),
  projectB: () => ({ projectId: 'project-b' }),
});
keyManagerContract({
  name: 'kmip (PyKMIP, protocol_version 1.2)',
  open: () => open({ protocol_version: '1.2' }),
  projectA: () => ({ projectId: 'project-a' }),
  projectB: () => ({ projectId: 'project-b' }),
});

const a = { projectId: 'project-a' };

describe('kmip objects', () => {
  let km: KeyManager;
  before(async () => (km = await open()));
  after(async () => km.close());

  it('createKey() of 512 bits (AES-256-XTS, dm-crypt\'s usual key) registers a 64-byte key', async () => {
    const id = await km.createKey(a, { algorithm: 'aes', length: 512 });
    const key = await km.get(a, id);
    assert.equal(key.bytes().length, 64);
    assert.equal(key.bitLength, 512);
  });

  it('a client certificate with another CN cannot get the object (E_KEY_FORBIDDEN from the server)', async () => {
    const id = await km.createKey(a, { algorithm: 'aes', length: 256 });
    const stranger = await open({}, kmip.other);
    try {
      await rejectsWithCode(stranger.get(a, id), 'E_KEY_FORBIDDEN');
      await rejectsWithCode(stranger.delete(a, id), 'E_KEY_FORBIDDEN');
      // PyKMIP's default policy lets anyone read public keys and certificates; secrets stay the owner's.
      assert.deepEqual(await stranger.list(a, { type: 'symmetric' }), []);
      assert.deepEqual(await stranger.list(a, { type: 'passphrase' }), []);
    } finally {
      await stranger.close();
    }
    assert.equal((await km.get(a, id)).bytes().length, 32);
  });

  it('ids that cannot be KMIP unique identifiers are E_INVALID_ARGUMENT before anything is sent', async () => {
    await rejectsWithCode(km.get(a, ''), 'E_INVALID_ARGUMENT');
    await rejectsWithCode(km.get(a, 'x'.repeat(200)), 'E_INVALID_ARGUMENT');
    await rejectsWithCode(km.delete(a, 'has space'), 'E_INVALID_ARGUMENT');
    await rejectsWithCode(km.get(a, randomUUID()), 'E_KEY_NOT_FOUND');
  });
});
