/**
 * key_manager.kmip: names, defaults, and where the CA, certificate and key
 * come from (a file, or a systemd credential).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { kmipBackend } from '../../../../src/keyclient/backends/kmip/backend.js';
import { configSchema } from '../../../../src/config/schema.js';
import { plainAllocator } from '../../../../src/util/secure-memory.js';
import { rejectsWithCode } from '../../../helpers/errors.js';

const dir = mkdtempSync(join(tmpdir(), 'portcullis-kmip-opts-'));
after(() => rmSync(dir, { recursive: true, force: true }));
for (const name of ['ca.pem', 'client.pem', 'client-key.pem']) writeFileSync(join(dir, name), '-----BEGIN CERTIFICATE-----\nnot really\n-----END CERTIFICATE-----\n', { mode: 0o600 });
const files = { ca_file: join(dir, 'ca.pem'), cert_file: join(dir, 'client.pem'), key_file: join(dir, 'client-key.pem') };
const paths = (result: { error?: { issues: Array<{ path: PropertyKey[] }> } }) => result.error?.issues.map((i) => i.path.join('.')) ?? [];

describe('kmip options', () => {
  it('default to port 5696, 30 s, a pool of 4, negotiated version', () => {
    assert.deepEqual({ ...kmipBackend.optionsSchema.parse({ host: 'kmip.example.org', ...files }) }, { host: 'kmip.example.org', port: 5696, ...files, timeout_seconds: 30, pool_size: 4 });
  });

  it('are accepted under key_manager.kmip with backend: kmip', () => {
    const config = configSchema.parse({ key_manager: { backend: 'kmip', kmip: { host: '127.0.0.1', ...files, server_name: 'kmip', protocol_version: '1.2' } } });
    assert.equal(config.key_manager.backend, 'kmip');
    assert.equal(config.key_manager.kmip?.protocol_version, '1.2');
  });

  it('reject unknown keys, a missing host, unknown protocol versions, and name every missing PEM source', () => {
    assert.ok(paths(kmipBackend.optionsSchema.safeParse({ host: 'h', ...files, bogus: 1 })).includes(''));
    assert.ok(paths(kmipBackend.optionsSchema.safeParse({ ...files })).includes('host'));
    assert.ok(paths(kmipBackend.optionsSchema.safeParse({ host: 'h', ...files, protocol_version: '2.1' })).includes('protocol_version'));
    const none = paths(kmipBackend.optionsSchema.safeParse({ host: 'h' }));
    assert.deepEqual(none, ['ca_file', 'cert_file', 'key_file']);
  });

  it('read *_credential from $CREDENTIALS_DIRECTORY, and refuse both a file and a credential', () => {
    process.env['CREDENTIALS_DIRECTORY'] = dir;
    try {
      const opts = kmipBackend.optionsSchema.parse({ host: 'h', ca_credential: 'ca.pem', cert_credential: 'client.pem', key_credential: 'client-key.pem' });
      assert.equal(opts.key_file, join(dir, 'client-key.pem'));
      assert.equal('key_credential' in opts, false);
      assert.deepEqual(paths(kmipBackend.optionsSchema.safeParse({ host: 'h', ...files, key_credential: 'client-key.pem' })), ['key_file']);
    } finally {
      delete process.env['CREDENTIALS_DIRECTORY'];
    }
    assert.deepEqual(paths(kmipBackend.optionsSchema.safeParse({ host: 'h', ...files, key_file: undefined, key_credential: 'k' })), ['key_credential']);
  });

  it('a missing file, or a certificate and key that do not make a TLS context, are E_INVALID_ARGUMENT when the backend is created', async () => {
    const missing = await rejectsWithCode(kmipBackend.create(kmipBackend.optionsSchema.parse({ host: 'h', ...files, key_file: join(dir, 'nope') }), { allocator: plainAllocator() }), 'E_INVALID_ARGUMENT');
    assert.match(missing.message, /client key .*nope \(ENOENT\)/);
    await rejectsWithCode(kmipBackend.create(kmipBackend.optionsSchema.parse({ host: 'h', ...files }), { allocator: plainAllocator() }), 'E_INVALID_ARGUMENT');
  });
});
