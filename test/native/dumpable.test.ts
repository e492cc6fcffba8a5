import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { isDumpable, setDumpable } from '../../native/index.js';
import { NOBODY, report, runChild } from './helpers.js';

/** Whether the crash scenario leaves a core file behind (core_pattern "core": the child's cwd). */
async function dumpsCore(mode: 'dumpable' | 'undumpable'): Promise<{ signal: string | null; cores: number }> {
  const dir = await mkdtemp(join(tmpdir(), 'portcullis-dump-'));
  try {
    const result = await runChild('crash', ['1', '2', mode], { cwd: dir, limits: ['--core=unlimited'] });
    // "core" or "core.PID", as kernel.core_uses_pid says.
    return { signal: result.signal, cores: (await readdir(dir)).filter((name) => name.startsWith('core')).length };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

// setDumpable(false) is tried in children only: the test runner itself must stay dumpable.
describe('setDumpable() and isDumpable()', () => {
  it('isDumpable() is true for an ordinary process such as this test runner', () => {
    assert.equal(isDumpable(), true);
  });

  it('setDumpable(false) makes isDumpable() false and hands /proc/PID to root, out of the process owner\'s reach', async () => {
    const out = report(await runChild('dumpable', [], { asNobody: true }));
    assert.deepEqual(out.before, { dumpable: true, owner: NOBODY });
    assert.deepEqual(out.after, { dumpable: false, owner: 0 });
    assert.deepEqual(out.restored, { dumpable: true, owner: NOBODY }, 'setDumpable(true) undoes it');
  });

  it('setDumpable(false) stops core dumps, which the same crash otherwise writes', async (t) => {
    if ((await readFile('/proc/sys/kernel/core_pattern', 'utf8')).startsWith('|')) {
      return t.skip('core_pattern pipes cores to a helper; no file to look for');
    }
    assert.deepEqual(await dumpsCore('dumpable'), { signal: 'SIGABRT', cores: 1 }, 'a dumpable crash writes core');
    assert.deepEqual(await dumpsCore('undumpable'), { signal: 'SIGABRT', cores: 0 });
  });

  it('setDumpable() throws a TypeError for anything but a boolean', () => {
    for (const flag of [0, 1, 'false', null, undefined]) {
      assert.throws(() => setDumpable(flag as unknown as boolean), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: /flag to be a boolean/ });
    }
    assert.equal(isDumpable(), true, 'nothing was changed');
  });
});
