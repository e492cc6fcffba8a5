import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { secureStats } from '../../native/index.js';
import { lockedAllocator } from '../../native/secure-allocator.js';
import { adoptSecret, copySecret, plainAllocator, type SecureAllocator } from '../../src/util/secure-memory.js';
import { throwsWithCode } from '../helpers/errors.js';
import { pagesFor, vmLckBytes } from './helpers.js';

/** What every SecureAllocator promises; run against plainAllocator too, so the two cannot drift apart. */
function allocatorContract(name: string, make: () => SecureAllocator): void {
  describe(`${name}: the SecureAllocator contract`, () => {
    it(`${name}.alloc() returns a zero-filled buffer of the length asked for, whose view() is the same memory each time`, () => {
      const buf = make().alloc(48);
      assert.equal(buf.length, 48);
      assert.equal(buf.wiped, false);
      assert.ok(buf.view().every((byte) => byte === 0));
      buf.view().write('key material');
      assert.equal(buf.view().toString('utf8', 0, 12), 'key material');
      buf.wipe();
    });

    it(`${name}.alloc(0) gives an empty buffer that wipes like any other`, () => {
      const allocator = make();
      const buf = allocator.alloc(0);
      assert.equal(buf.view().length, 0);
      buf.wipe();
      assert.equal(buf.wiped, true);
      assert.equal(allocator.stats().liveBuffers, 0);
    });

    it(`${name} wipe() marks the buffer wiped, after which view() throws E_OBJECT_WIPED; a second wipe() is a no-op`, () => {
      const allocator = make();
      const buf = allocator.alloc(32);
      buf.view().fill(0xee);
      buf.wipe();
      assert.equal(buf.wiped, true);
      throwsWithCode(() => buf.view(), 'E_OBJECT_WIPED');
      buf.wipe();
      assert.equal(allocator.stats().liveBuffers, 0);
    });

    it(`${name}: writing a wiped buffer's wiped flag back to false does not bring its bytes back`, () => {
      const buf = make().alloc(16);
      buf.wipe();
      Reflect.set(buf, 'wiped', false);
      throwsWithCode(() => buf.view(), 'E_OBJECT_WIPED');
    });

    it(`${name}.stats() counts live buffers and their bytes until they are wiped`, () => {
      const allocator = make();
      const a = allocator.alloc(32);
      const b = allocator.alloc(100);
      assert.deepEqual(
        { liveBuffers: allocator.stats().liveBuffers, liveBytes: allocator.stats().liveBytes },
        { liveBuffers: 2, liveBytes: 132 },
      );
      a.wipe();
      assert.equal(allocator.stats().liveBytes, 100);
      b.wipe();
      assert.deepEqual([allocator.stats().liveBuffers, allocator.stats().liveBytes], [0, 0]);
    });

    it(`${name}.alloc() throws E_INVALID_ARGUMENT for a negative, fractional or over-1-MiB length`, () => {
      const allocator = make();
      for (const length of [-1, 1.5, (1 << 20) + 1, Number.NaN]) throwsWithCode(() => allocator.alloc(length), 'E_INVALID_ARGUMENT');
      assert.equal(allocator.stats().liveBuffers, 0);
    });

    it(`adoptSecret() with ${name} copies the secret in and zeroes the source; copySecret() leaves the source`, () => {
      const allocator = make();
      const source = Buffer.from('0123456789abcdef');
      const copied = copySecret(allocator, source);
      assert.equal(source.toString(), '0123456789abcdef');
      const adopted = adoptSecret(allocator, source);
      assert.ok(source.every((byte) => byte === 0));
      assert.equal(adopted.view().toString(), '0123456789abcdef');
      assert.deepEqual(copied.view(), adopted.view());
      copied.wipe();
      adopted.wipe();
    });
  });
}

allocatorContract('plainAllocator()', plainAllocator);
allocatorContract('lockedAllocator()', lockedAllocator);

describe('lockedAllocator()', () => {
  it('lockedAllocator() reports kind "locked" and locked: true', () => {
    const allocator = lockedAllocator();
    assert.equal(allocator.kind, 'locked');
    assert.equal(allocator.stats().locked, true);
  });

  it('lockedAllocator() keeps secrets in locked memory: VmLck and secureStats() grow by a page per size class used, and whole pages for large ones, until wipe()', () => {
    const allocator = lockedAllocator();
    const before = { vmLck: vmLckBytes(), stats: secureStats() };
    const keys = [allocator.alloc(32), allocator.alloc(64), allocator.alloc(5000)];
    // 32 and 64 bytes are slots of two shared pages (classes 32 and 64); 5,000 bytes get pages of their own.
    const locked = pagesFor(32) + pagesFor(64) + pagesFor(5000);
    assert.equal(vmLckBytes() - before.vmLck, locked);
    assert.equal(secureStats().lockedBytes - before.stats.lockedBytes, locked);
    assert.equal(secureStats().liveBuffers - before.stats.liveBuffers, 3);
    for (const key of keys) key.wipe();
    assert.equal(vmLckBytes(), before.vmLck);
    assert.equal(secureStats().liveBuffers, before.stats.liveBuffers);
  });

  it('lockedAllocator() wipe() empties views taken before it, where plainAllocator() leaves zeros', () => {
    const locked = lockedAllocator().alloc(16);
    const lockedView = locked.view();
    lockedView.fill(0x42);
    locked.wipe();
    assert.deepEqual([lockedView.length, lockedView[0]], [0, undefined]);

    const plain = plainAllocator().alloc(16);
    const plainView = plain.view();
    plainView.fill(0x42);
    plain.wipe();
    assert.deepEqual([plainView.length, plainView[0]], [16, 0]);
  });
});
