/**
 * The KMIP client's connections against a real PyKMIP server: the pool
 * (handshakes counted client-side on 'secureConnect'), reconnecting after a
 * server restart, version negotiation; then faults PyKMIP cannot produce on
 * demand, from fake TLS servers named as such.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { kmipBackend, type KmipKeyManager } from '../../../../src/keyclient/backends/kmip/backend.js';
import { plainAllocator } from '../../../../src/util/secure-memory.js';
import { makePki, startKmip, type KmipServer } from '../../../fixtures/kmip-server.js';
import { rejectsWithCode } from '../../../helpers/errors.js';

const allocator = plainAllocator();
const a = { projectId: 'project-a' };
let kmip: KmipServer;
before(async () => {
  kmip = await startKmip();
});
after(async () => kmip?.stop());

async function open(extra: Record<string, unknown> = {}, port?: number): Promise<KmipKeyManager> {
  const options = { ...kmip.options(kmip.client, extra), ...(port !== undefined ? { port } : {}) };
  return (await kmipBackend.create(kmipBackend.optionsSchema.parse(options), { allocator })) as KmipKeyManager;
}

describe('kmip connection pool', () => {
  it('200 concurrent get()s over a pool of 4 make at most 4 TLS handshakes, and all return the key', async (t) => {
    const km = await open({ pool_size: 4 });
    try {
      const id = await km.createKey(a, { algorithm: 'aes', length: 256 });
      const expected = Buffer.from((await km.get(a, id)).bytes());
      const results = await Promise.all(Array.from({ length: 200 }, () => km.get(a, id)));
      for (const key of results) assert.deepEqual(Buffer.from(key.bytes()), expected);
      const stats = km.client.stats();
      t.diagnostic(`TLS handshakes for 202 requests: ${stats.handshakes}`);
      assert.ok(stats.handshakes >= 1 && stats.handshakes <= 4, `handshakes: ${stats.handshakes}`);
      assert.ok(stats.open <= 4, `open connections: ${stats.open}`);
      assert.equal(stats.waiting, 0);
    } finally {
      await km.close();
    }
  });

  it('a server restart costs at most one failed request, then the pool reconnects', async (t) => {
    const km = await open({ pool_size: 4 });
    try {
      const id = await km.createKey(a, { algorithm: 'aes', length: 256 });
      await Promise.all(Array.from({ length: 8 }, () => km.get(a, id)));
      const before = km.client.stats().handshakes;
      await kmip.restart();
      const outcomes = await Promise.allSettled(Array.from({ length: 8 }, () => km.get(a, id)));
      const failed = outcomes.filter((o) => o.status === 'rejected');
      t.diagnostic(`requests failed after the restart: ${failed.length} of 8`);
      assert.ok(failed.length <= 1, `failed after the restart: ${failed.map((f) => String((f as PromiseRejectedResult).reason)).join('; ')}`);
      for (let i = 0; i < 10; i += 1) assert.equal((await km.get(a, id)).bytes().length, 32);
      assert.ok(km.client.stats().handshakes > before, 'new connections were made after the restart');
    } finally {
      await km.close();
    }
  });

  it('negotiates the highest version both speak (2.0 with PyKMIP), or the one pinned by protocol_version', async () => {
    const negotiated = await open();
    try {
      await negotiated.health();
      assert.deepEqual(negotiated.client.version(), { major: 2, minor: 0 });
    } finally {
      await negotiated.close();
    }
    for (const [pin, version] of [['1.4', { major: 1, minor: 4 }], ['1.1', { major: 1, minor: 1 }]] as const) {
      const pinned = await open({ protocol_version: pin });
      try {
        const id = await pinned.createKey(a, { algorithm: 'aes', length: 128, name: `pinned-${pin}` });
        assert.deepEqual(pinned.client.version(), version);
        assert.equal((await pinned.get(a, id)).bytes().length, 16);
        assert.deepEqual((await pinned.list(a, { name: `pinned-${pin}` })).map((o) => o.id), [id]);
      } finally {
        await pinned.close();
      }
    }
  });

  it('a server that is not there is E_BACKEND_UNAVAILABLE, saying the request was not sent', async () => {
    const km = await open({}, 1);
    const err = await rejectsWithCode(km.get(a, '1'), 'E_BACKEND_UNAVAILABLE');
    assert.equal((err as unknown as { details: { requestSent: boolean } }).details.requestSent, false);
    assert.equal((await km.health()).ok, false);
    await km.close();
  });

  it('after close(), requests fail with E_BACKEND_UNAVAILABLE', async () => {
    const km = await open();
    await km.health();
    await km.close();
    await rejectsWithCode(km.get(a, '1'), 'E_BACKEND_UNAVAILABLE');
  });
});

/** A TLS server with the fixture's server certificate that answers each connection with `onData`. */
async function fakeTlsServer(onData: (socket: tls.TLSSocket) => void): Promise<{ port: number; stop(): Promise<void> }> {
  const server = tls.createServer({
    cert: readFileSync(join(kmip.dir, 'server.pem')),
    key: readFileSync(join(kmip.dir, 'server-key.pem')),
    ca: readFileSync(kmip.ca),
    requestCert: true,
    rejectUnauthorized: true,
  });
  const sockets = new Set<tls.TLSSocket>();
  server.on('secureConnection', (socket) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.once('data', () => onData(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  return {
    port: typeof address === 'object' && address !== null ? address.port : 0,
    stop: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

describe('kmip faults (fake TLS servers)', () => {
  it('fake: a server that never answers is E_BACKEND_UNAVAILABLE after timeout_seconds, saying the request may have been carried out', async () => {
    const fake = await fakeTlsServer(() => undefined);
    const km = await open({ timeout_seconds: 0.3 }, fake.port);
    try {
      const err = await rejectsWithCode(km.get(a, '1'), 'E_BACKEND_UNAVAILABLE');
      assert.match(err.message, /did not answer within 300 ms/);
    } finally {
      await km.close();
      await fake.stop();
    }
  });

  it('fake: a response announcing 4 GiB is refused before anything that size is allocated (E_BACKEND_PROTOCOL)', async () => {
    const fake = await fakeTlsServer((socket) => socket.write(Buffer.from([0x42, 0x00, 0x7b, 0x01, 0xff, 0xff, 0xff, 0xf0])));
    const km = await open({}, fake.port);
    try {
      const err = await rejectsWithCode(km.get(a, '1'), 'E_BACKEND_PROTOCOL');
      assert.match(err.message, /over the 1048576-byte limit/);
    } finally {
      await km.close();
      await fake.stop();
    }
  });

  it('fake: garbage instead of TTLV is E_BACKEND_PROTOCOL with the decode error as cause', async () => {
    const fake = await fakeTlsServer((socket) => socket.write(Buffer.from('HTTP/1.1 400 Bad Request\r\n\r\n')));
    const km = await open({}, fake.port);
    try {
      const err = await rejectsWithCode(km.get(a, '1'), 'E_BACKEND_PROTOCOL');
      assert.equal((err.cause as { code?: string } | undefined)?.code, 'E_KMIP_DECODE');
    } finally {
      await km.close();
      await fake.stop();
    }
  });

  it('a client certificate from a CA the server does not trust is refused in the handshake (E_BACKEND_AUTH)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'portcullis-kmip-foreign-'));
    try {
      const [foreign] = makePki(dir, ['portcullis']).clients;
      const km = (await kmipBackend.create(kmipBackend.optionsSchema.parse({ ...kmip.options(), cert_file: foreign?.cert, key_file: foreign?.key }), { allocator })) as KmipKeyManager;
      try {
        await rejectsWithCode(km.get(a, '1'), 'E_BACKEND_AUTH');
        assert.equal(km.client.stats().handshakes, 0);
      } finally {
        await km.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a server certificate for another name is refused (E_BACKEND_AUTH) before anything is sent', async () => {
    const km = await open({ server_name: 'kmip.example.org' });
    try {
      const err = await rejectsWithCode(km.get(a, '1'), 'E_BACKEND_AUTH');
      assert.equal((err as unknown as { details: { requestSent: boolean } }).details.requestSent, false);
    } finally {
      await km.close();
    }
  });
});
