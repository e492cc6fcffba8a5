/**
 * Commands that hang and opens that die midway, on a real kernel: a request
 * always ends, a stuck command's slot is accounted for (health, metrics)
 * rather than lost, and what a killed open leaves behind does not block the
 * next attach of that name.
 */
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import type { DaemonProcess } from '../fixtures/daemon.js';
import { waitForMatch, waitUntil } from '../helpers/wait.js';
import { code, daemonKernel, ok, type DaemonKernel } from './vm-setup.js';

const cli = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
let kernel: DaemonKernel;
let daemon: DaemonProcess;

function createKey(project: string): string {
  const run = spawnSync(process.execPath, [cli, '--config', daemon.configPath, 'key', 'create', '--project', project, '--length', '512'], { encoding: 'utf8' });
  assert.equal(run.status, 0, run.stderr);
  return run.stdout.trim();
}

interface Health {
  status: string;
  checks: Record<string, { ok: boolean; detail: string }>;
}

before(async () => {
  kernel = await daemonKernel();
  const dir = mkdtempSync(join(tmpdir(), 'portcullisd-faults-'));
  daemon = await kernel.daemon({
    dir,
    config: {
      key_manager: { backend: 'local', local: { path: `${dir}/keystore.db`, kek_file: `${dir}/kek` } },
      limits: { command_timeout_seconds: 3, max_concurrent_commands: 4 },
      log: { format: 'json' },
    },
  });
});
after(async () => {
  // A suspended device would hang the cleanup's own commands: resume whatever is left.
  await kernel?.sh('for d in $(dmsetup ls | cut -f1 | grep -E "^pd-(susp|slow)"); do dmsetup resume $d; dmsetup remove $d; done; true').catch(() => undefined);
  await kernel?.cleanup();
});

describe('a command stuck in the kernel', () => {
  it('a LUKS attach on a suspended device is refused at once (422 E_DEVICE_UNREADABLE naming the suspension): the daemon never starts I/O that would hang in-process', async () => {
    const loop = await kernel.loopDevice(8);
    // I/O to a suspended device waits, uninterruptibly, until it is resumed: SIGKILL cannot end it.
    await kernel.sh(`dmsetup create pd-susp --table "0 $(blockdev --getsz ${loop}) linear ${loop} 0" && dmsetup mknodes pd-susp && test -b /dev/mapper/pd-susp && dmsetup suspend pd-susp`);
    const answer = await daemon.call('PUT', '/v1/volumes/pd-on-susp', { device: '/dev/mapper/pd-susp', provider: 'luks2', key: { id: createKey('tenant-a') }, project_id: 'tenant-a' });
    assert.equal(answer.status, 422, answer.text);
    assert.equal(code(answer), 'E_DEVICE_UNREADABLE');
    assert.match(answer.text, /suspended device-mapper device/);
    assert.equal(ok<Health>(await daemon.call('GET', '/v1/health')).checks['commands']?.ok, true, 'nothing held');
  });

  it('a plain attach on a suspended device is refused at once too: the helper\'s signature probe will not read it', async () => {
    const answer = await daemon.call('PUT', '/v1/volumes/pd-on-susp', { device: '/dev/mapper/pd-susp', provider: 'plain', key: { id: createKey('tenant-a') }, project_id: 'tenant-a' });
    assert.equal(answer.status, 422, answer.text);
    assert.equal(code(answer), 'E_DEVICE_UNREADABLE');
    assert.match(answer.text, /suspended device-mapper device/);
    await kernel.sh('dmsetup resume pd-susp && dmsetup remove pd-susp');
  });

  it('I/O that hangs without a suspension (dm-delay, as a queueing multipath device): 504 E_CRYPTSETUP_TIMEOUT (stuck); health and metrics count the held operation until it ends', async () => {
    const loop = await kernel.loopDevice(8);
    // Every read waits 2 s (the probe makes many, past the 3 s timeout): nothing in sysfs says so, as nothing does for a multipath device queueing with no path.
    await kernel.sh(`dmsetup create pd-slow --table "0 $(blockdev --getsz ${loop}) delay ${loop} 0 2000" && dmsetup mknodes pd-slow && test -b /dev/mapper/pd-slow`);
    // plain: the helper's signature probe is its first touch of the device, and it waits there.
    const answer = await daemon.call('PUT', '/v1/volumes/pd-on-slow', { device: '/dev/mapper/pd-slow', provider: 'plain', key: { id: createKey('tenant-a') }, project_id: 'tenant-a' });
    assert.equal(answer.status, 504, answer.text);
    assert.equal(code(answer), 'E_CRYPTSETUP_TIMEOUT');
    assert.equal((answer.body as { error: { details: { stuck?: boolean } } }).error.details.stuck, true);
    const held = ok<Health>(await daemon.call('GET', '/v1/health'));
    assert.equal(held.status, 'degraded');
    assert.equal(held.checks['commands']?.ok, false);
    assert.match(held.checks['commands']?.detail ?? '', /^1 of 4 command slot\(s\) held by commands stuck/);
    assert.match((await daemon.call('GET', '/metrics')).text, /^portcullis_commands_stuck 1$/m);

    await waitUntil('the stuck operation ended once its delayed read came back', async () => ok<Health>(await daemon.call('GET', '/v1/health')).checks['commands']?.ok === true, {
      timeoutMs: 90_000,
      intervalMs: 500,
    });
    assert.match((await daemon.call('GET', '/metrics')).text, /^portcullis_commands_stuck 0$/m);
    // The probe's read-ahead may still sit in dm-delay for a while after the probe answered: bounded retries.
    await kernel.sh('! test -e /dev/mapper/pd-on-slow && for i in $(seq 1 120); do dmsetup remove pd-slow 2>/dev/null && exit 0; sleep 1; done; exit 1');
  });
});

describe('a request past its deadline', () => {
  it('stops at its next step: queued behind a stuck attach of the same name, it answers 504 E_REQUEST_TIMEOUT and later formats and maps nothing', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'portcullisd-deadline-'));
    const impatient = await kernel.daemon({
      dir,
      config: {
        key_manager: { backend: 'local', local: { path: `${dir}/keystore.db`, kek_file: `${dir}/kek` } },
        limits: { command_timeout_seconds: 3, request_timeout_seconds: 2 },
        log: { format: 'json' },
      },
    });
    const keyRun = spawnSync(process.execPath, [cli, '--config', impatient.configPath, 'key', 'create', '--project', 'tenant-a'], { encoding: 'utf8' });
    assert.equal(keyRun.status, 0, keyRun.stderr);
    const key = keyRun.stdout.trim();
    const [loop, blank] = [await kernel.loopDevice(8), await kernel.loopDevice(32)];
    // Reads of pd-slow2 take 2 s each (dm-delay), many of them: the first attach's signature probe waits there.
    await kernel.sh(`dmsetup create pd-slow2 --table "0 $(blockdev --getsz ${loop}) delay ${loop} 0 2000" && dmsetup mknodes pd-slow2`);
    const body = (device: string, provider: string) => ({ device, provider, key: { id: key }, project_id: 'tenant-a', format: 'if-blank' });
    // The first holds the name's lock while its probe (plain's first touch of the device) waits; the second waits for that lock past its deadline.
    const first = impatient.call('PUT', '/v1/volumes/pd-late', body('/dev/mapper/pd-slow2', 'plain'));
    // Device operations run only inside the locked section: one running means the first holds the name.
    await waitForMatch('the first attach running a command', async () => (await impatient.call('GET', '/metrics')).text, /^portcullis_commands_active [1-9]/m, { timeoutMs: 30_000 });
    const second = await impatient.call('PUT', '/v1/volumes/pd-late', body(blank, 'luks2'));
    assert.equal(code(second), 'E_REQUEST_TIMEOUT');
    assert.equal(code(await first), 'E_REQUEST_TIMEOUT');
    // Both attaches end (the first with its killed command); the second must have stopped at the lock.
    const ended = () => impatient.log().split('\n').filter((l) => l.includes('"message":"attach"') && l.includes('"name":"pd-late"'));
    await waitUntil('both attaches of pd-late logged their end', () => ended().length >= 2, { timeoutMs: 60_000, intervalMs: 250, describe: () => impatient.log() });
    assert.ok(ended().some((l) => l.includes('"outcome":"E_REQUEST_TIMEOUT"')), ended().join('\n'));
    await kernel.sh(`! cryptsetup isLuks ${blank} && ! test -e /dev/mapper/pd-late && for i in $(seq 1 120); do dmsetup remove pd-slow2 2>/dev/null && exit 0; sleep 1; done; exit 1`);
    await impatient.stop();
  });
});

describe('an open killed midway', () => {
  it('a table-less dm device of the name (what cryptsetup leaves when killed between create and load) is removed, and the attach succeeds', async () => {
    const dev = await kernel.loopDevice(32);
    await kernel.sh('dmsetup create pd-half --notable -u CRYPT-LUKS2-00000000000000000000000000000000-pd-half');
    const answer = ok<{ opened: boolean; formatted: boolean }>(
      await daemon.call('PUT', '/v1/volumes/pd-half', { device: dev, provider: 'luks2', key: { id: createKey('tenant-a') }, project_id: 'tenant-a', format: 'if-blank' }),
    );
    assert.deepEqual([answer.opened, answer.formatted], [true, true]);
    await kernel.sh('test "$(dmsetup table pd-half | cut -d" " -f3)" = crypt');
    ok(await daemon.call('DELETE', '/v1/volumes/pd-half'));
  });

  it('a table-less device that cryptsetup did not make is left alone: the attach is refused, the device stays', async () => {
    const dev = await kernel.loopDevice(8);
    await kernel.sh('dmsetup create pd-half-other --notable -u OTHER-pd-half-other');
    const answer = await daemon.call('PUT', '/v1/volumes/pd-half-other', { device: dev, provider: 'plain', key: { id: createKey('tenant-a') }, project_id: 'tenant-a' });
    assert.equal(answer.status, 409, answer.text);
    assert.equal(code(answer), 'E_DEVICE_BUSY');
    await kernel.sh('dmsetup info pd-half-other >/dev/null && dmsetup remove pd-half-other');
  });
});
