/**
 * The daemon's side of the helper protocol: against the real helper binary
 * (spawned as the daemon spawns it) for what the helper answers, and over a
 * stand-in transport that never answers — named FAKE below — for a hung
 * operation, which no real helper on this host can be made to produce.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { helperClient } from '../../../src/luks/helper/client.js';
import { decodeResponse, encodeRequest, FrameReader, Op, requestSize, Tag, text } from '../../../src/luks/helper/frame.js';
import { spawnHelper } from '../../../src/luks/helper/spawn.js';
import type { HelperTransport } from '../../../src/luks/helper/transport.js';
import { helperCryptOps } from '../../../src/luks/crypt/helper.js';
import { HELPER_BINARY } from '../../vm/helper-link.js';
import { rejectsWithCode } from '../../helpers/errors.js';

describe('frames', () => {
  it('a request encodes as length, version 1, kind 1, op, id, then tag-length-value fields', () => {
    const fields = [[Tag.NAME, 'vol-1'] as const, [Tag.FLAGS, { u32: 5 }] as const];
    const frame = encodeRequest(Buffer.alloc(requestSize(fields)), Op.CLOSE, 7, fields);
    assert.equal(frame.readUInt32LE(0), frame.length - 4);
    assert.deepEqual([frame[4], frame[5], frame.readUInt16LE(6), frame.readUInt32LE(8)], [1, 1, Op.CLOSE, 7]);
    assert.deepEqual([frame.readUInt16LE(12), frame.readUInt32LE(14), frame.subarray(18, 23).toString()], [Tag.NAME, 5, 'vol-1']);
    assert.deepEqual([frame.readUInt16LE(23), frame.readUInt32LE(25), frame.readUInt32LE(29)], [Tag.FLAGS, 4, 5]);
  });

  it('the reader splits a stream cut anywhere into whole frames, and refuses an impossible length', () => {
    const body = Buffer.from([1, 2, 4, 0, 9, 0, 0, 0, 0, 0, 0, 0]);
    const frame = Buffer.concat([Buffer.from([12, 0, 0, 0]), body]);
    const reader = new FrameReader();
    const stream = Buffer.concat([frame, frame]);
    const got = [...reader.push(stream.subarray(0, 5)), ...reader.push(stream.subarray(5, 19)), ...reader.push(stream.subarray(19))];
    assert.equal(got.length, 2);
    assert.deepEqual(decodeResponse(got[1] ?? Buffer.alloc(0)), { op: 4, id: 9, status: 0, fields: new Map() });
    assert.throws(() => new FrameReader().push(Buffer.from([1, 0, 0, 0])), /out of range/);
  });
});

describe('helperClient() with the real helper', () => {
  const client = helperClient({ connect: () => spawnHelper({ path: HELPER_BINARY, symlinkDirs: [], log: () => undefined }) });
  after(() => client.close());

  it('greets it: protocol 1 and the libcryptsetup it was built against', async () => {
    const r = await client.call(Op.HELLO, [], 'greet');
    assert.equal(r.status, 0);
    assert.equal((JSON.parse(text(r, Tag.JSON) ?? '{}') as { protocol: number }).protocol, 1);
  });

  it('matches answers to requests by id when many are in flight', async () => {
    const names = Array.from({ length: 20 }, (_, i) => `no-such-${i}`);
    const answers = await Promise.all(names.map((n) => client.call(Op.STATUS, [[Tag.NAME, n]], `status of ${n}`)));
    // Without device-mapper here each is DM_UNAVAILABLE; with it, NOT_FOUND: either way one answer per request.
    for (const r of answers) assert.ok(r.status === 2 || r.status === 9, `status ${r.status}`);
    assert.equal(new Set(answers.map((r) => r.id)).size, names.length);
  });

  it('a request the helper refuses becomes the driver\'s typed error, naming what was wrong', async () => {
    const crypt = helperCryptOps(client);
    const err = await rejectsWithCode(crypt.erase({ path: '/dev/../etc/passwd', rdev: '1:1' }), 'E_LUKS_INVALID_ARGUMENT');
    assert.match(err.message, /PATH/);
  });
});

describe('helperClient() with a helper that never answers (FAKE transport: a hung kernel operation)', () => {
  it('answers E_CRYPTSETUP_TIMEOUT at the timeout, counts the operation stuck until it settles, and moves on to a fresh helper after enough are stuck', async () => {
    const transports: Array<{ settle: (body: Buffer) => void; pending: Map<number, (b: Buffer) => void> }> = [];
    const connect = (): HelperTransport => {
      const pending = new Map<number, (b: Buffer) => void>();
      transports.push({ pending, settle: () => undefined });
      return {
        where: `fake ${transports.length}`,
        alive: true,
        exchange: (_frame, id) => new Promise<Buffer>((resolve) => pending.set(id, resolve)),
        close: () => undefined,
      };
    };
    const client = helperClient({ connect, timeoutMs: 20, replaceWhenStuck: 2 });
    const err = await rejectsWithCode(client.call(Op.HELLO, [], 'greet'), 'E_CRYPTSETUP_TIMEOUT');
    assert.equal((err as unknown as { details: { stuck: boolean } }).details.stuck, true);
    assert.deepEqual(client.stats(), { inFlight: 0, stuck: 1, helperAlive: true });
    await rejectsWithCode(client.call(Op.HELLO, [], 'greet'), 'E_CRYPTSETUP_TIMEOUT');
    assert.equal(transports.length, 1);
    // Two stuck on the first helper: the next operation goes to a new one.
    await rejectsWithCode(client.call(Op.HELLO, [], 'greet'), 'E_CRYPTSETUP_TIMEOUT');
    assert.equal(transports.length, 2);
    // The first helper's kernel lets go at last: its two operations are no longer stuck.
    const late = (id: number): Buffer => {
      const body = Buffer.alloc(12);
      body.writeUInt8(1, 0);
      body.writeUInt8(2, 1);
      body.writeUInt32LE(id, 4);
      return body;
    };
    for (const [id, resolve] of transports[0]?.pending ?? []) resolve(late(id));
    await new Promise((r) => setImmediate(r));
    assert.equal(client.stats().stuck, 1);
  });
});
