/**
 * portcullis-helper's protocol on this host (no VM, no device-mapper needed):
 * frames, field checks, matching by id, clean exits, no key on stderr. Every
 * case runs against the normal build and the ASan/UBSan build; a sanitizer
 * report fails the case. The operations themselves: helper.vm.test.ts.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, describe, it } from 'node:test';
import { Op, Status, Tag, json, message, requestBody, withLength, type Fields, type Response } from './codec.js';
import { HelperProcess, SANITIZER_REPORT, type Flavour } from './process.js';

const KEY = randomBytes(48);
const KEY_HEX = KEY.toString('hex');
const OPEN_FIELDS: Fields = [
  [Tag.TYPE, 'luks2'], [Tag.PATH, '/dev/loop0'], [Tag.RDEV, '7:0'], [Tag.NAME, 'vol-1'], [Tag.KEY, KEY],
];
const without = (fields: Fields, tag: number): Fields => fields.filter(([t]) => t !== tag);
const replace = (fields: Fields, tag: number, value: Fields[number][1]): Fields => [...without(fields, tag), [tag, value]];

/** The helper's stderr carries no sanitizer report, only JSON lines, and no key in any spelling. */
function assertCleanStderr(stderr: string, flavour: Flavour): void {
  assert.doesNotMatch(stderr, SANITIZER_REPORT, `sanitizer report:\n${stderr}`);
  for (const spelling of [KEY_HEX, KEY.toString('base64'), KEY.toString('latin1')]) assert.ok(!stderr.includes(spelling), 'a key reached stderr');
  if (flavour === 'plain') {
    for (const line of stderr.split('\n').filter((l) => l !== '')) {
      const event = JSON.parse(line) as { event?: unknown };
      assert.equal(typeof event.event, 'string', `not a log event: ${line}`);
    }
  }
}

async function finish(h: HelperProcess, flavour: Flavour, expectCode: number): Promise<void> {
  h.hangUp();
  const { code, signal } = await h.exited();
  assertCleanStderr(h.stderr, flavour);
  assert.equal(signal, null, `killed by ${signal}; stderr:\n${h.stderr}`);
  assert.equal(code, expectCode, `exit status; stderr:\n${h.stderr}`);
}

function assertInvalid(r: Response, pattern: RegExp): void {
  assert.equal(r.status, Status.EINVAL, `status ${r.status}: ${message(r)}`);
  const m = message(r);
  assert.ok(m !== undefined && pattern.test(m), `MESSAGE ${JSON.stringify(m)} does not match ${pattern}`);
  assert.ok(!m.includes(KEY_HEX) && !r.fields.get(Tag.MESSAGE)?.includes(KEY), 'a key in MESSAGE');
}

after(() => HelperProcess.killAll());

for (const flavour of ['plain', 'asan'] as const) {
  describe(`portcullis-helper protocol (${flavour} build)`, () => {
    it('HELLO names protocol 1, the helper and libcryptsetup versions and every op', async () => {
      const h = new HelperProcess(flavour);
      const r = await h.request(Op.HELLO, [], 4242);
      assert.equal(r.status, Status.OK);
      assert.equal(r.id, 4242);
      assert.equal(r.op, Op.HELLO);
      const hello = json(r) as { protocol: number; helper: string; libcryptsetup: string; ops: string[] };
      assert.equal(hello.protocol, 1);
      assert.equal(hello.helper, '0.1.0');
      assert.match(hello.libcryptsetup, /^2\.\d+\.\d+$/);
      assert.deepEqual(hello.ops, Object.keys(Op));
      await finish(h, flavour, 0);
    });

    it('--stdio serves the same protocol on stdin/stdout and exits 0 at end of input', async () => {
      const h = new HelperProcess(flavour, 'stdio');
      const r = await h.request(Op.HELLO);
      assert.equal(r.status, Status.OK);
      await finish(h, flavour, 0);
    });

    const malformed: Array<[string, Buffer]> = [
      ['a length below the header size', withLength(Buffer.alloc(4))],
      ['a length above 17 MiB', Buffer.from([0x01, 0x00, 0x10, 0x01])],
      ['version 2', withLength(requestBody(Op.HELLO, 1, [], 2))],
      ['kind 2 (a response)', withLength(requestBody(Op.HELLO, 1, [], 1, 2))],
      ['a field running past the body', withLength(Buffer.concat([requestBody(Op.STATUS, 1), Buffer.from([2, 0, 9, 0, 0, 0, 0x61])]))],
      ['a field header cut short', withLength(Buffer.concat([requestBody(Op.STATUS, 1), Buffer.from([2, 0, 1])]))],
      ['a repeated tag', withLength(requestBody(Op.STATUS, 1, [[Tag.NAME, 'a'], [Tag.NAME, 'b']]))],
      ['a field length near 2^32', withLength(Buffer.concat([requestBody(Op.STATUS, 1), Buffer.from([2, 0, 0xff, 0xff, 0xff, 0xff])]))],
      ['a stream ending inside a frame', Buffer.from([0x40, 0, 0, 0, 1, 1])],
    ];
    for (const [what, bytes] of malformed) {
      it(`a frame with ${what} closes the connection and the helper exits 2 (nothing answered)`, async () => {
        const h = new HelperProcess(flavour);
        const before = await h.request(Op.HELLO);
        assert.equal(before.status, Status.OK);
        h.write(bytes);
        if (what.startsWith('a stream ending')) h.hangUp();
        const { code, signal } = await h.exited();
        assert.equal(signal, null);
        assert.equal(code, 2, `exit status; stderr:\n${h.stderr}`);
        assert.ok(h.ended, 'the stream was closed');
        assert.equal(h.unclaimed(), 0, 'no answer to the malformed frame');
        assert.match(h.stderr, /"event":"malformed"/);
        assertCleanStderr(h.stderr, flavour);
      });
    }

    const invalid: Array<[string, number, Fields, RegExp]> = [
      ['an unknown op', 999, [], /unknown op 999/],
      ['op 0', 0, [], /unknown op 0/],
      ['a missing KEY', Op.OPEN, without(OPEN_FIELDS, Tag.KEY), /OPEN needs field KEY/],
      ['a missing RDEV', Op.OPEN, without(OPEN_FIELDS, Tag.RDEV), /OPEN needs field RDEV/],
      ['an unexpected field', Op.HELLO, [[Tag.PATH, '/dev/loop0']], /HELLO does not take field PATH/],
      ['a response tag in a request', Op.STATUS, [[Tag.NAME, 'a'], [Tag.MESSAGE, 'x']], /does not take field tag 100/],
      ['NAME starting with a dash', Op.STATUS, [[Tag.NAME, '-vol']], /field NAME must match/],
      ['NAME with a slash', Op.STATUS, [[Tag.NAME, 'a/b']], /field NAME must match/],
      ['NAME of 128 bytes', Op.STATUS, [[Tag.NAME, 'a'.repeat(128)]], /field NAME must match/],
      ['an empty NAME', Op.STATUS, [[Tag.NAME, '']], /field NAME must match/],
      ['NAME with a NUL', Op.STATUS, [[Tag.NAME, 'a\0b']], /field NAME holds a NUL/],
      ['PATH with ..', Op.OPEN, replace(OPEN_FIELDS, Tag.PATH, '/dev/../etc/shadow'), /field PATH must be \/dev\//],
      ['PATH outside /dev', Op.OPEN, replace(OPEN_FIELDS, Tag.PATH, '/etc/passwd'), /field PATH must be \/dev\//],
      ['a relative PATH', Op.HEADER, [[Tag.PATH, 'dev/loop0']], /field PATH must be \/dev\//],
      ['PATH with a space', Op.HEADER, [[Tag.PATH, '/dev/loop 0']], /field PATH must be \/dev\//],
      ['RDEV without a minor', Op.OPEN, replace(OPEN_FIELDS, Tag.RDEV, '7'), /field RDEV must be major:minor/],
      ['RDEV with letters', Op.OPEN, replace(OPEN_FIELDS, Tag.RDEV, '7:x'), /field RDEV must be major:minor/],
      ['a negative RDEV', Op.OPEN, replace(OPEN_FIELDS, Tag.RDEV, '-7:0'), /field RDEV must be major:minor/],
      ['RDEV beyond a 12-bit major', Op.OPEN, replace(OPEN_FIELDS, Tag.RDEV, '4096:0'), /field RDEV must be major:minor/],
      ['RDEV with a leading zero', Op.OPEN, replace(OPEN_FIELDS, Tag.RDEV, '07:0'), /field RDEV must be major:minor/],
      ['a KEY of 8193 bytes', Op.OPEN, replace(OPEN_FIELDS, Tag.KEY, Buffer.concat([KEY, Buffer.alloc(8193 - KEY.length, 0x41)])), /field KEY must be 1\.\.8192 bytes, not 8193/],
      ['an empty KEY', Op.OPEN, replace(OPEN_FIELDS, Tag.KEY, Buffer.alloc(0)), /field KEY must be 1\.\.8192 bytes, not 0/],
      ['TYPE luks3', Op.OPEN, replace(OPEN_FIELDS, Tag.TYPE, 'luks3'), /field TYPE must be luks1, luks2 or plain/],
      ['CIPHER for a LUKS open', Op.OPEN, [...OPEN_FIELDS, [Tag.CIPHER, 'aes-xts-plain64']], /for TYPE plain only/],
      ['an upper-case CIPHER', Op.OPEN, [...replace(OPEN_FIELDS, Tag.TYPE, 'plain'), [Tag.CIPHER, 'AES-xts-plain64']], /field CIPHER must be/],
      ['KEY_BITS 100', Op.OPEN, [...replace(OPEN_FIELDS, Tag.TYPE, 'plain'), [Tag.KEY_BITS, { u32: 100 }]], /KEY_BITS must be 128\.\.1024/],
      ['KEY_BITS of 2 bytes', Op.OPEN, [...replace(OPEN_FIELDS, Tag.TYPE, 'plain'), [Tag.KEY_BITS, Buffer.from([0, 1])]], /KEY_BITS must be 4 bytes/],
      ['an unknown FLAGS bit', Op.OPEN, [...OPEN_FIELDS, [Tag.FLAGS, { u32: 1 << 7 }]], /FLAGS has unknown bits 0x80/],
      ['deferred on OPEN', Op.OPEN, [...OPEN_FIELDS, [Tag.FLAGS, { u32: 4 }]], /deferred\) is for CLOSE only/],
      ['FORMAT of plain', Op.FORMAT, [[Tag.TYPE, 'plain'], [Tag.PATH, '/dev/loop0'], [Tag.RDEV, '7:0'], [Tag.KEY, KEY]], /FORMAT takes TYPE luks1 or luks2/],
      ['a LUKS1 label', Op.FORMAT, [[Tag.TYPE, 'luks1'], [Tag.PATH, '/dev/loop0'], [Tag.RDEV, '7:0'], [Tag.KEY, KEY], [Tag.LABEL, 'x']], /need TYPE luks2/],
      ['a label of 48 bytes', Op.FORMAT, [[Tag.TYPE, 'luks2'], [Tag.PATH, '/dev/loop0'], [Tag.RDEV, '7:0'], [Tag.KEY, KEY], [Tag.LABEL, 'x'.repeat(48)]], /LABEL must be at most 47/],
      ['READ of 16 MiB + 1', Op.READ, [[Tag.PATH, '/dev/loop0'], [Tag.OFFSET, { u64: 0n }], [Tag.LENGTH, { u64: 16n * 1024n * 1024n + 1n }]], /at most 16777216 bytes/],
      ['KEY_REMOVE of slot -1', Op.KEY_REMOVE, [[Tag.PATH, '/dev/loop0'], [Tag.RDEV, '7:0'], [Tag.SLOT, { i32: -1 }]], /needs a SLOT number/],
      ['SYMLINK with a relative LINK', Op.SYMLINK, [[Tag.LINK, 'x/y'], [Tag.PATH, '/dev/loop0']], /field LINK must be an absolute path/],
    ];
    it('refuses each invalid request with EINVAL and a MESSAGE, and keeps serving', async () => {
      const h = new HelperProcess(flavour);
      for (const [what, op, fields, pattern] of invalid) {
        const r = await h.request(op, fields);
        assert.equal(r.op, op, what);
        try {
          assertInvalid(r, pattern);
        } catch (e) {
          throw new Error(`${what}: ${(e as Error).message}`);
        }
      }
      assert.equal((await h.request(Op.HELLO)).status, Status.OK, 'still serving');
      await finish(h, flavour, 0);
    });

    it('matches concurrent responses by id, whatever order they come in', async () => {
      const h = new HelperProcess(flavour);
      // Ids out of sequence, requests of different ops and outcomes, all sent before any answer is read.
      const plan: Array<[number, number, Fields, number]> = [];
      for (let i = 0; i < 40; i++) {
        const id = 0xfffffff0 - i * 7919;
        if (i % 3 === 0) plan.push([id, Op.HELLO, [], Status.OK]);
        else if (i % 3 === 1) plan.push([id, Op.READ, [[Tag.PATH, '/dev/null'], [Tag.OFFSET, { u64: 0n }], [Tag.LENGTH, { u64: 1n }]], Status.EINVAL]);
        else plan.push([id, Op.STATUS, [[Tag.NAME, `n${i}`]], -1]);
      }
      const answers = plan.map(([id, op, fields]) => h.request(op, fields, id));
      const got = await Promise.all(answers);
      got.forEach((r, i) => {
        const [id, op, , status] = plan[i] as (typeof plan)[number];
        assert.equal(r.id, id);
        assert.equal(r.op, op, `response ${id} carries its request's op`);
        if (status >= 0) assert.equal(r.status, status, `${id}: ${message(r)}`);
      });
      assert.match(message(got[1] as Response) ?? '', /\/dev\/null is not a block device/);
      await finish(h, flavour, 0);
    });

    it('checks RDEV against the opened device: DEVICE_CHANGED for another, NOT_FOUND for a missing PATH', async () => {
      const h = new HelperProcess(flavour);
      const read = (rdev: string, path = '/dev/loop0'): Promise<Response> =>
        h.request(Op.READ, [[Tag.PATH, path], [Tag.RDEV, rdev], [Tag.OFFSET, { u64: 0n }], [Tag.LENGTH, { u64: 512n }]]);
      const wrong = await read('7:1');
      assert.equal(wrong.status, Status.DEVICE_CHANGED, message(wrong));
      assert.match(message(wrong) ?? '', /\/dev\/loop0 is now 7:0, not the requested 7:1/);
      const right = await read('7:0');
      assert.equal(right.status, Status.OK, message(right));
      assert.equal(right.fields.get(Tag.DATA)?.length, 0, 'an unattached loop device reads as empty');
      const missing = await read('7:0', '/dev/portcullis-no-such-device');
      assert.equal(missing.status, Status.NOT_FOUND, message(missing));
      await finish(h, flavour, 0);
    });

    it('never writes a key to stderr or a MESSAGE, on any path a key takes', async () => {
      const h = new HelperProcess(flavour);
      const cases: Fields[] = [
        OPEN_FIELDS, // reaches the op: /dev/loop0 has no header
        replace(OPEN_FIELDS, Tag.NAME, '-bad'), // refused by the checks after KEY was copied
        [...replace(OPEN_FIELDS, Tag.TYPE, 'plain'), [Tag.CIPHER, 'aes-xts-plain64'], [Tag.KEY_BITS, { u32: 512 }]],
      ];
      for (const fields of cases) {
        const r = await h.request(Op.OPEN, fields);
        assert.notEqual(r.status, Status.OK);
        assert.ok(!r.fields.get(Tag.MESSAGE)?.includes(KEY), 'key bytes in MESSAGE');
      }
      const kt = await h.request(Op.KEY_TEST, [[Tag.PATH, '/dev/loop0'], [Tag.RDEV, '7:0'], [Tag.KEY, KEY]]);
      assert.notEqual(kt.status, Status.OK);
      await finish(h, flavour, 0);
    });
  });
}
