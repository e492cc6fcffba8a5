/**
 * Interop with PyKMIP's own client (kmip.pie.client.ProxyKmipClient, run
 * under Debian's /usr/bin/python3 by servers/kmip_client.py), both ways,
 * through a real PyKMIP server: bytes must be identical. Versions differ on
 * purpose: the Python client speaks KMIP 1.2, portcullis negotiates 2.0.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { kmipBackend } from '../../../../src/keyclient/backends/kmip/backend.js';
import type { KeyManager } from '../../../../src/keyclient/key-manager.js';
import { objectOfType, type ObjectType } from '../../../../src/keyclient/objects/index.js';
import { adoptSecret, plainAllocator } from '../../../../src/util/secure-memory.js';
import { pykmipClient, startKmip, type KmipServer } from '../../../fixtures/kmip-server.js';
import { rejectsWithCode } from '../../../helpers/errors.js';

const allocator = plainAllocator();
const a = { projectId: 'project-a' };
const b = { projectId: 'project-b' };
let kmip: KmipServer;
let km: KeyManager;
before(async () => {
  kmip = await startKmip();
  km = await kmipBackend.create(kmipBackend.optionsSchema.parse(kmip.options()), { allocator });
});
after(async () => {
  await km?.close();
  await kmip?.stop();
});

const py = (args: string[], input?: string) => pykmipClient(kmip, kmip.client, args, input).trim();

describe('interop: PyKMIP\'s client registers, portcullis reads', () => {
  it('a symmetric key registered by ProxyKmipClient for project-a reads back byte-identical, with its name', async () => {
    const key = randomBytes(32);
    const id = py(['register-symmetric', 'from-pykmip', a.projectId], key.toString('hex'));
    const got = await km.get(a, id);
    assert.equal(got.type, 'symmetric');
    assert.equal(got.name, 'from-pykmip');
    assert.equal(got.algorithm, 'aes');
    assert.equal(got.bitLength, 256);
    assert.deepEqual(Buffer.from(got.bytes()), key);
    await rejectsWithCode(km.get(b, id), 'E_KEY_NOT_FOUND');
  });

  it('a passphrase (Secret Data) registered by ProxyKmipClient reads back byte-identical', async () => {
    const secret = Buffer.from('correct horse battery staple');
    const id = py(['register-secret', 'pykmip-pass', a.projectId], secret.toString('hex'));
    const got = await km.get(a, id);
    assert.equal(got.type, 'passphrase');
    assert.deepEqual(Buffer.from(got.bytes()), secret);
  });
});

describe('interop: portcullis makes, PyKMIP\'s client reads', () => {
  it('a key portcullis created on the server reads back byte-identical through ProxyKmipClient', async () => {
    const id = await km.createKey(a, { algorithm: 'aes', length: 256, name: 'from-portcullis' });
    const ours = Buffer.from((await km.get(a, id)).bytes());
    assert.equal(py(['get', id]), ours.toString('hex'));
    assert.equal(py(['names', id]), 'from-portcullis');
  });

  const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 });
  const stored: Array<[ObjectType, Buffer, Record<string, unknown>]> = [
    ['symmetric', randomBytes(16), { algorithm: 'aes', bitLength: 128 }],
    ['passphrase', Buffer.from('open sesame'), {}],
    ['opaque', randomBytes(48), {}],
    ['private', rsa.privateKey.export({ type: 'pkcs8', format: 'der' }), { algorithm: 'rsa', bitLength: 1024 }],
    ['public', rsa.publicKey.export({ type: 'spki', format: 'der' }), { algorithm: 'rsa', bitLength: 1024 }],
  ];
  for (const [type, bytes, meta] of stored) {
    it(`a ${type} object portcullis stored reads back byte-identical through ProxyKmipClient`, async () => {
      const id = await km.store(a, objectOfType(type, { name: `interop-${type}`, ...meta }, adoptSecret(allocator, Buffer.from(bytes))));
      assert.equal(py(['get', id]), bytes.toString('hex'));
    });
  }
});
