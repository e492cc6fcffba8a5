import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { secureAlloc, secureLend, secureStats, secureWipe } from '../../native/index.js';
import { mappedBytesWithFlags, pageSize, pattern, vmLckBytes } from './helpers.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

/** Collects and turns the event loop until `done` (a detached view is finalized after a GC, from setImmediate); bounded. */
async function turnsUntil(done: () => boolean): Promise<boolean> {
  for (let turn = 0; turn < 100 && !done(); turn++) {
    gc();
    await new Promise((resolve) => setImmediate(resolve));
  }
  return done();
}

const perPage = pageSize / 64;

describe('secure slabs: small secrets share locked pages', () => {
  it('64-byte secrets take 64 bytes of locked memory each: a page holds 64 of them, the 65th maps a second page', () => {
    const before = { stats: secureStats(), vmLck: vmLckBytes() };
    const keys = Array.from({ length: perPage }, () => secureAlloc(64));
    assert.equal(secureStats().lockedBytes - before.stats.lockedBytes, pageSize);
    assert.equal(vmLckBytes() - before.vmLck, pageSize);
    const extra = secureAlloc(64);
    assert.equal(secureStats().lockedBytes - before.stats.lockedBytes, 2 * pageSize);
    assert.equal(secureStats().slabs - before.stats.slabs, 2);
    for (const key of [...keys, extra]) secureWipe(key);
    assert.deepEqual([secureStats().lockedBytes, secureStats().liveBuffers, secureStats().slabs], [before.stats.lockedBytes, before.stats.liveBuffers, before.stats.slabs]);
    assert.equal(vmLckBytes(), before.vmLck, 'empty slabs go back to the kernel');
  });

  it('1,000 cached 64-byte keys lock at most 128 bytes each', () => {
    const before = secureStats().lockedBytes;
    const keys = Array.from({ length: 1000 }, () => secureAlloc(64));
    assert.ok((secureStats().lockedBytes - before) / 1000 <= 128, `${(secureStats().lockedBytes - before) / 1000} bytes per key`);
    for (const key of keys) secureWipe(key);
  });

  it('a slab page is locked, left out of core dumps and wiped in forked children (smaps VmFlags lo dd wf)', () => {
    const before = mappedBytesWithFlags('lo', 'dd', 'wf');
    const key = secureAlloc(64);
    assert.equal(mappedBytesWithFlags('lo', 'dd', 'wf') - before, pageSize);
    secureWipe(key);
    assert.equal(mappedBytesWithFlags('lo', 'dd', 'wf'), before);
  });

  it('a wiped slot is the next one handed out, zeroed, without mapping a page; its neighbours keep their bytes', () => {
    const keys = Array.from({ length: perPage }, (_, i) => {
      const key = secureAlloc(64);
      key.set(pattern(i, 64));
      return key;
    });
    const full = secureStats();
    secureWipe(keys[10] as Buffer);
    assert.equal(keys[10]?.length, 0, 'the wiped buffer is detached');
    assert.equal(secureStats().liveBuffers, full.liveBuffers - 1);
    assert.deepEqual([secureStats().lockedBytes, secureStats().slabs], [full.lockedBytes, full.slabs], 'the page stays for its other 63 slots');
    const reused = secureAlloc(64);
    assert.deepEqual([secureStats().lockedBytes, secureStats().slabs, secureStats().liveBuffers], [full.lockedBytes, full.slabs, full.liveBuffers], 'the freed slot was reused: no new page');
    assert.ok(reused.every((byte) => byte === 0), 'the reused slot holds none of the wiped key');
    assert.ok(keys.every((key, i) => i === 10 || key.equals(pattern(i, 64))), 'wiping one slot left the others alone');
    for (const key of [...keys, reused]) secureWipe(key);
  });
});

describe('secureLend(): a second view of the same locked bytes', () => {
  it('the view shares the bytes (no copy); wiping it detaches the view only and leaves the owner', () => {
    const owner = secureAlloc(64);
    owner.set(pattern(7, 64));
    const view = secureLend(owner);
    assert.ok(view.equals(pattern(7, 64)));
    owner[0] = 0xff;
    assert.equal(view[0], 0xff, 'a write through the owner shows through the view: it is the same memory');
    const live = secureStats().liveBuffers;
    secureWipe(view.subarray(3, 9));
    assert.deepEqual([view.length, view[0]], [0, undefined], 'the view is detached, also through a subarray');
    assert.equal(owner.length, 64);
    assert.equal(owner[0], 0xff, 'the owner keeps its bytes');
    assert.equal(secureStats().liveBuffers, live, 'no slot was freed');
    secureWipe(owner);
  });

  it('wiping the owner zeroes the bytes a live view reads, and keeps the slot from reuse until the view is finalized', async () => {
    assert.ok(await turnsUntil(() => secureStats().lentViews === 0), "earlier tests' views are finalized");
    const before = secureStats();
    // In a function of its own, so nothing here refers to the view once it returns and the GC can finalize it.
    const other = ((): Buffer => {
      const owner = secureAlloc(64);
      owner.set(pattern(9, 64));
      const view = secureLend(owner);
      secureWipe(owner);
      assert.equal(owner.length, 0);
      assert.ok(view.length === 64 && view.every((byte) => byte === 0), 'the view reads zeros, never the key');
      assert.equal(secureStats().liveBuffers, before.liveBuffers + 1, 'the slot is still held for the view');
      const newer = secureAlloc(64);
      newer.set(pattern(11, 64));
      assert.ok(view.every((byte) => byte === 0), 'a newer secret did not land under the live view');
      secureWipe(view);
      return newer;
    })();
    assert.ok(await turnsUntil(() => secureStats().lentViews === 0), "the view's finalizer ran");
    assert.equal(secureStats().liveBuffers, before.liveBuffers + 1, 'only the newer secret holds a slot');
    assert.ok(other.equals(pattern(11, 64)));
    secureWipe(other);
    assert.equal(secureStats().liveBuffers, before.liveBuffers);
  });

  it('secureLend() refuses a wiped buffer and ordinary memory with a TypeError', () => {
    const owner = secureAlloc(16);
    secureWipe(owner);
    assert.throws(() => secureLend(owner), { name: 'TypeError', message: /wiped/ });
    assert.throws(() => secureLend(Buffer.alloc(16)), { name: 'TypeError', message: /ordinary memory/ });
  });
});
