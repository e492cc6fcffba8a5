import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { memlockLimit, secureAlloc, secureStats, secureWipe } from '../../native/index.js';
import { mappedBytesWithFlags, pagesFor, pageSize, vmLckBytes } from './helpers.js';

describe('secureAlloc()', () => {
  it('secureAlloc() returns a zero-filled Buffer of the requested length that reads back what is written', () => {
    const buf = secureAlloc(100);
    try {
      assert.ok(Buffer.isBuffer(buf));
      assert.equal(buf.length, 100);
      assert.ok(buf.every((byte) => byte === 0));
      buf.write('secret key bytes');
      assert.equal(buf.toString('utf8', 0, 16), 'secret key bytes');
    } finally {
      secureWipe(buf);
    }
  });

  it('secureAlloc() counts each buffer and the whole pages it locks in secureStats()', () => {
    const before = secureStats();
    const sizes = [1, pageSize, pageSize + 1, 3 * pageSize - 7];
    const buffers = sizes.map((size) => secureAlloc(size));
    const during = secureStats();
    assert.equal(during.liveBuffers - before.liveBuffers, sizes.length);
    assert.equal(during.lockedBytes - before.lockedBytes, sizes.reduce((sum, size) => sum + pagesFor(size), 0));
    for (const buf of buffers) secureWipe(buf);
    const after = secureStats();
    // Wiping gives the pages back at once, without waiting for the GC.
    assert.deepEqual([after.liveBuffers, after.lockedBytes], [before.liveBuffers, before.lockedBytes]);
  });

  it('secureAlloc() grows VmLck in /proc/self/status by the allocated pages while the buffers live', () => {
    const before = vmLckBytes();
    const buffers = [secureAlloc(10), secureAlloc(2 * pageSize), secureAlloc(5 * pageSize + 1)];
    assert.equal(vmLckBytes() - before, pageSize + 2 * pageSize + 6 * pageSize);
    for (const buf of buffers) secureWipe(buf);
    assert.equal(vmLckBytes(), before);
  });

  it('secureAlloc() memory is locked, left out of core dumps and wiped in forked children (smaps VmFlags lo dd wf)', () => {
    const before = mappedBytesWithFlags('lo', 'dd', 'wf');
    const buf = secureAlloc(3 * pageSize);
    assert.equal(mappedBytesWithFlags('lo', 'dd', 'wf') - before, 3 * pageSize);
    secureWipe(buf);
    assert.equal(mappedBytesWithFlags('lo', 'dd', 'wf'), before);
  });

  it('secureAlloc() throws a TypeError for a size that is not a number, before allocating', () => {
    const before = secureStats();
    for (const size of ['32', null, undefined, 32n, {}]) {
      assert.throws(() => secureAlloc(size as unknown as number), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: /size to be a number/ });
    }
    assert.deepEqual(secureStats(), before);
  });

  it('secureAlloc() throws a RangeError for a size that is negative, zero, fractional, huge or NaN', () => {
    for (const size of [-1, 0, 1.5, 64 * 1024 * 1024 + 1, Number.NaN, Infinity]) {
      assert.throws(() => secureAlloc(size), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE', message: /size to be an integer from 1 to 67108864/ });
    }
  });
});

describe('secureWipe()', () => {
  it('secureWipe() makes the buffer unreadable from JS: length 0, reads give undefined', () => {
    const buf = secureAlloc(32);
    buf.fill(0xa5);
    const arrayBuffer = buf.buffer;
    secureWipe(buf);
    assert.equal(buf.length, 0);
    assert.equal(buf[0], undefined);
    assert.equal(buf.toString('hex'), '');
    assert.equal(arrayBuffer.byteLength, 0, 'the ArrayBuffer under it is detached');
  });

  it('secureWipe() also empties every other view of the same memory', () => {
    const buf = secureAlloc(64);
    buf.fill(0x5a);
    const view = buf.subarray(8, 40);
    const bytes = new Uint8Array(buf.buffer, buf.byteOffset, buf.length);
    secureWipe(buf);
    assert.deepEqual([view.length, bytes.length, view[0], bytes[0]], [0, 0, undefined, undefined]);
  });

  it('secureWipe() of a subarray wipes and releases the whole allocation', () => {
    const before = secureStats();
    const buf = secureAlloc(64);
    secureWipe(buf.subarray(10, 20));
    assert.equal(buf.length, 0);
    assert.equal(secureStats().lockedBytes, before.lockedBytes);
  });

  it('secureWipe() twice is a no-op that releases the memory once', () => {
    const before = secureStats();
    const keep = secureAlloc(16);
    const buf = secureAlloc(16);
    secureWipe(buf);
    secureWipe(buf);
    const after = secureStats();
    assert.equal(after.liveBuffers, before.liveBuffers + 1, 'the other buffer is still counted');
    assert.equal(after.lockedBytes, before.lockedBytes + pageSize);
    keep.fill(7);
    assert.equal(keep[15], 7, 'the other buffer is still mapped');
    secureWipe(keep);
  });

  it('secureWipe() throws a TypeError for anything but a typed array', () => {
    for (const value of ['secret', 42, null, undefined, {}, new ArrayBuffer(8)]) {
      assert.throws(() => secureWipe(value as unknown as Uint8Array), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: /expects a Buffer from secureAlloc/ });
    }
  });

  it('secureWipe() refuses an ordinary Buffer with a TypeError and leaves it alone', () => {
    const ordinary = Buffer.from('not secure memory');
    assert.throws(() => secureWipe(ordinary), { name: 'TypeError', message: /this one is ordinary memory/ });
    assert.equal(ordinary.toString(), 'not secure memory');
  });
});

describe('memlockLimit()', () => {
  it('memlockLimit() reports RLIMIT_MEMLOCK as /proc/self/limits shows it (Infinity when unlimited)', () => {
    const line = /^Max locked memory\s+(\S+)\s+(\S+)\s+bytes\s*$/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    assert.ok(line !== null, 'Max locked memory line in /proc/self/limits');
    const parse = (value: string | undefined) => (value === 'unlimited' ? Infinity : Number(value));
    assert.deepEqual(memlockLimit(), { soft: parse(line[1]), hard: parse(line[2]) });
  });
});
