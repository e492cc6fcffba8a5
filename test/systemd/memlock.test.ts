/**
 * The RLIMIT_MEMLOCK check at start (src/daemon/memlock.ts), which is why the
 * unit sets LimitMEMLOCK=: the arithmetic on its own, then a real daemon
 * under prlimit(1) and setpriv(1) with and without CAP_IPC_LOCK.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { request } from '../fixtures/daemon.js';
import { hasEffectiveCapability, memlockNeeded, memlockWarning, pageSize, type MemlockSettings } from '../../src/daemon/memlock.js';
import { daemonIsReady, daemonMain, isRoot, spawnDaemon, tempDir, writeConfig } from './helpers.js';

const defaults: MemlockSettings = { cache: { max_entries: 1024 }, limits: { max_pending_requests: 64 } };
const MiB = 1048576;

describe('memlockWarning()', () => {
  it('memlockNeeded() counts a page per cached key, two per admitted request, and 8 spare', () => {
    assert.equal(memlockNeeded(defaults, 4096), (1024 + 2 * 64 + 8) * 4096);
    assert.equal(memlockNeeded({ ...defaults, cache: { max_entries: 10 } }, 65536), (10 + 128 + 8) * 65536);
  });

  it('memlockWarning() is silent when the soft limit covers the need, or is unlimited', () => {
    const needed = memlockNeeded(defaults, 4096);
    assert.equal(memlockWarning(defaults, { limit: { soft: needed, hard: needed }, capIpcLock: false, pageSize: 4096 }), undefined);
    assert.equal(memlockWarning(defaults, { limit: { soft: Infinity, hard: Infinity }, capIpcLock: false, pageSize: 4096 }), undefined);
  });

  it('memlockWarning() is silent with CAP_IPC_LOCK, which mlock does not bound by the limit', () => {
    assert.equal(memlockWarning(defaults, { limit: { soft: 0, hard: 0 }, capIpcLock: true, pageSize: 4096 }), undefined);
  });

  it('memlockWarning() names the limit, the need, the error attaches will get, and the fix in the unit', () => {
    const warning = memlockWarning(defaults, { limit: { soft: 64 * 1024, hard: MiB }, capIpcLock: false, pageSize: 4096 });
    assert.ok(warning);
    assert.equal(
      warning.message,
      'RLIMIT_MEMLOCK is 0.1 MiB but a full key cache (cache.max_entries 1024) with 64 requests in flight needs about 4.5 MiB; ' +
        'attaches will fail with E_NATIVE_MLOCK once it is reached. Raise it: LimitMEMLOCK=5M in the unit (systemctl edit portcullis), ' +
        'or ulimit -l 5120 by hand; or lower cache.max_entries. Continuing',
    );
    assert.deepEqual(warning.fields, { memlock_soft: 65536, memlock_hard: MiB, memlock_needed: (1024 + 136) * 4096, page_size: 4096 });
  });

  it('pageSize() reads what getconf PAGESIZE says, from the aux vector', () => {
    const getconf = spawnSync('getconf', ['PAGESIZE'], { encoding: 'utf8' });
    assert.equal(pageSize(), Number(getconf.stdout.trim()));
  });

  it('pageSize() falls back to 4096 when the aux vector cannot be read', () => {
    assert.equal(pageSize('/nonexistent/auxv'), 4096);
  });

  it('hasEffectiveCapability() reads one bit of CapEff', () => {
    const dir = tempDir('capeff');
    try {
      const status = join(dir, 'status');
      writeFileSync(status, 'Name:\tnode\nCapInh:\t0000000000000000\nCapEff:\t0000000000004000\nCapBnd:\t000001ffffffffff\n');
      assert.equal(hasEffectiveCapability(14n, status), true);
      assert.equal(hasEffectiveCapability(21n, status), false);
      assert.equal(hasEffectiveCapability(14n, join(dir, 'missing')), false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('portcullisd at start with a small RLIMIT_MEMLOCK', { skip: !isRoot && 'needs root (setpriv, prlimit)' }, () => {
  let dir: string;
  before(() => {
    dir = tempDir('memlock');
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  /** The daemon with a 1 MiB memlock limit and the unit's capabilities, minus CAP_IPC_LOCK when asked. */
  async function startWith(capabilities: string): Promise<string> {
    const config = writeConfig(dir);
    const socketPath = join(dir, 'portcullis.sock');
    const daemon = spawnDaemon([
      '/usr/bin/prlimit', `--memlock=${MiB}:${MiB}`,
      '/usr/bin/setpriv', `--bounding-set=-all,${capabilities}`, '--',
      process.execPath, daemonMain, '--config', config,
    ]);
    try {
      await daemon.waitForLog(daemonIsReady);
      // An answer means the start-up code, the check's log line and the signal handlers are all done.
      await request(socketPath, 'GET', '/v1/health');
      assert.equal(await daemon.stop(), 0);
      return daemon.log();
    } finally {
      await daemon.stop('SIGKILL');
    }
  }

  it('without CAP_IPC_LOCK, warns that the cache will not fit, with LimitMEMLOCK= as the fix, and serves anyway', async () => {
    const log = await startWith('+sys_admin,+chown');
    const line = log.split('\n').find((l) => l.includes('RLIMIT_MEMLOCK is'));
    assert.ok(line, log);
    const entry = JSON.parse(line) as Record<string, unknown>;
    assert.equal(entry['level'], 'warn');
    assert.equal(entry['memlock_soft'], MiB);
    assert.match(String(entry['message']), /LimitMEMLOCK=5M in the unit/);
  });

  it('with CAP_IPC_LOCK (as under the shipped unit), does not warn', async () => {
    const log = await startWith('+sys_admin,+chown,+ipc_lock');
    assert.doesNotMatch(log, /RLIMIT_MEMLOCK is/);
  });
});
