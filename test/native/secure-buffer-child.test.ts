import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { pageSize, pagesFor, pattern, report, runChild } from './helpers.js';

/** Runs the crash scenario with core dumps on, in a fresh directory; returns the core file, if one was written. */
async function crashAndCollectCore(secureSeed: number, plainSeed: number, mode: 'dumpable' | 'undumpable') {
  const dir = await mkdtemp(join(tmpdir(), 'portcullis-core-'));
  try {
    // core_pattern is relative ("core") on these hosts: the kernel writes into the child's cwd.
    const result = await runChild('crash', [String(secureSeed), String(plainSeed), mode], { cwd: dir, limits: ['--core=unlimited'] });
    const cores = (await readdir(dir)).filter((name) => name.startsWith('core'));
    const core = cores[0] === undefined ? undefined : await readFile(join(dir, cores[0]));
    return { signal: result.signal, core };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function corePattern(): Promise<string> {
  return (await readFile('/proc/sys/kernel/core_pattern', 'utf8')).trim();
}

describe('secure buffers and the garbage collector (forked child, --expose-gc)', () => {
  it('secureWipe() leaves the GC finalizer nothing to release: a newer buffer at the freed address survives it', async () => {
    const out = report(await runChild('gc-after-wipe', [], { execArgv: ['--expose-gc'] }));
    assert.equal(out.awaitingBefore, 1, 'the wiped buffer waited for its finalizer');
    assert.equal(out.settled, true, 'the finalizer ran');
    assert.equal(out.intact, true, 'the buffer allocated after the wipe still holds its bytes');
    assert.deepEqual(out.stats, { lockedBytes: pageSize, liveBuffers: 1, slabs: 1, lentViews: 0, wipedAwaitingGc: 0 });
    assert.equal(out.vmLck, pageSize);
  });

  it('secureWipe() finds each of 20,000 live buffers, wiped out of order with addresses reused, and the counts settle to zero', async () => {
    const count = 20_000;
    const out = report(await runChild('many-buffers', [String(count)], { execArgv: ['--expose-gc'] }));
    // 64-byte secrets share pages: 64 to a locked page, where each took a page of its own before.
    const slabs = Math.ceil(count / (pageSize / 64));
    assert.deepEqual(out.atPeak, { lockedBytes: slabs * pageSize, liveBuffers: count, slabs, lentViews: 0, wipedAwaitingGc: 0 });
    assert.equal(out.evenIntact, true, 'wiping one buffer left every other one\'s bytes alone');
    assert.equal(out.refillIntact, true, 'buffers mapped at reused addresses keep their bytes');
    assert.equal(out.oddDetached, true, 'each wiped buffer was detached');
    assert.deepEqual(out.wiped, { lockedBytes: 0, liveBuffers: 0, slabs: 0, lentViews: 0, wipedAwaitingGc: count + count / 2 });
    assert.equal(out.settled, true, 'every finalizer ran');
    assert.deepEqual(out.stats, { lockedBytes: 0, liveBuffers: 0, slabs: 0, lentViews: 0, wipedAwaitingGc: 0 });
    assert.equal(out.vmLck, 0);
  });

  it('secureAlloc() buffers dropped without a wipe are zeroed and released by the GC finalizer', async () => {
    const out = report(await runChild('gc-unwiped', [], { execArgv: ['--expose-gc'] }));
    assert.deepEqual(out.before, { stats: { lockedBytes: 3 * pagesFor(5000), liveBuffers: 3, slabs: 3, lentViews: 0, wipedAwaitingGc: 0 }, vmLck: 3 * pagesFor(5000) });
    assert.equal(out.settled, true);
    assert.deepEqual(out.stats, { lockedBytes: 0, liveBuffers: 0, slabs: 0, lentViews: 0, wipedAwaitingGc: 0 });
    assert.equal(out.vmLck, 0);
  });
});

describe('secureAlloc() under RLIMIT_MEMLOCK (forked child as nobody)', () => {
  it('secureAlloc() throws E_NATIVE_MLOCK naming RLIMIT_MEMLOCK and its value when the limit is reached', async () => {
    const limit = 16 * pageSize;
    const out = report(await runChild('mlock-limit', [], { asNobody: true, limits: [`--memlock=${limit}:${limit}`] }));
    assert.deepEqual(out.limit, { soft: limit, hard: limit });
    assert.equal(out.firstLength, 100, 'allocations within the limit succeed');
    const error = out.error as { name: string; code: string; message: string; details: Record<string, unknown> } | undefined;
    assert.ok(error !== undefined, 'allocating the whole limit again failed');
    assert.equal(error.name, 'NativeError');
    assert.equal(error.code, 'E_NATIVE_MLOCK');
    assert.match(error.message, new RegExp(`RLIMIT_MEMLOCK is ${limit} bytes and ${pageSize} bytes are locked already`));
    assert.match(error.message, /LimitMEMLOCK=/);
    assert.deepEqual(
      { syscall: error.details.syscall, requested: error.details.requested, lockedBytes: error.details.lockedBytes, limit: error.details.limit },
      { syscall: 'mlock', requested: limit, lockedBytes: pageSize, limit },
    );
    assert.deepEqual(out.stats, { lockedBytes: pageSize, liveBuffers: 1, slabs: 1, lentViews: 0, wipedAwaitingGc: 0 }, 'the failed allocation left nothing behind');
  });
});

describe('secure buffers in a core dump (forked child that aborts)', () => {
  it('secureAlloc() memory is left out of the core file while ordinary memory is in it', async (t) => {
    if ((await corePattern()).startsWith('|')) return t.skip('core_pattern pipes cores to a helper; no file to read');
    const { signal, core } = await crashAndCollectCore(0x5ec0e7, 0x91a1, 'dumpable');
    assert.equal(signal, 'SIGABRT');
    assert.ok(core !== undefined, 'the child dumped core');
    assert.ok(core.includes(pattern(0x91a1, 256)), 'the ordinary buffer is in the core (the search works)');
    assert.ok(!core.includes(pattern(0x5ec0e7, 256)), 'the secure buffer is not in the core');
  });
});
