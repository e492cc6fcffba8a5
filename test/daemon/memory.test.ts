/**
 * What a real portcullisd process does with key memory: cached keys live in
 * locked pages shared by slots (VmLck grows as the cache fills, and falls when it is
 * flushed), and the process is not dumpable, so a crash leaves no core file
 * with keys in it.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, it } from 'node:test';
import { stringify } from 'yaml';
import { startDaemonProcess } from '../fixtures/daemon.js';
import { waitUntil } from '../helpers/wait.js';
import { pageSize } from '../native/helpers.js';

const cli = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const daemonMain = fileURLToPath(new URL('../fixtures/daemon-main.js', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'portcullisd-memory-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const config = {
  key_manager: { backend: 'local', local: { path: join(dir, 'keystore.db'), kek_file: join(dir, 'kek') } },
  log: { format: 'json' },
};

function vmLckKiB(pid: number): number {
  const line = /^VmLck:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  assert.ok(line, 'VmLck in /proc/PID/status');
  return Number(line[1]);
}

describe('portcullisd key memory', () => {
  it('holds cached keys in locked memory: 8 cached 64-byte keys share one locked page, which goes on flush', async () => {
    const d = await startDaemonProcess({ dir, config });
    try {
      const pid = d.child.pid as number;
      const keys = Array.from({ length: 8 }, () => {
        const run = spawnSync(process.execPath, [cli, '--config', d.configPath, 'key', 'create', '--project', 'mem', '--length', '512'], { encoding: 'utf8' });
        assert.equal(run.status, 0, run.stderr);
        return run.stdout.trim();
      });
      const before = vmLckKiB(pid);
      // Each attach fetches its key into the cache before it looks at the (absent) device.
      for (const id of keys) await d.call('PUT', '/v1/volumes/mem', { device: '/dev/portcullis-no-such-disk', provider: 'plain', key: { id }, project_id: 'mem' });
      assert.equal((await d.call('GET', '/v1/cache')).body && ((await d.call('GET', '/v1/cache')).body as { entries: number }).entries, 8);
      const filled = vmLckKiB(pid);
      // Slots of a shared slab: one page for the eight, where each took a page of its own before.
      assert.equal(filled - before, pageSize / 1024, `VmLck grew by ${filled - before} kB for 8 cached keys`);
      assert.deepEqual((await d.call('DELETE', '/v1/cache')).body, { flushed: 8 });
      assert.ok(vmLckKiB(pid) <= before, 'flushing wipes and unlocks them');
    } finally {
      await d.stop();
    }
  });

  it('is not dumpable: a crash leaves no core file', async (t) => {
    if (readFileSync('/proc/sys/kernel/core_pattern', 'utf8').startsWith('|')) {
      t.skip('core dumps go to a helper (core_pattern is a pipe) on this host; cannot look for a core file');
      return;
    }
    // Positive control: a dumpable process started the same way, killed the same way, does leave a core here;
    // without this, a host whose core_pattern writes elsewhere would pass for any daemon.
    const control = mkdtempSync(join(dir, 'control-'));
    const dumpable = spawn('/bin/sh', ['-c', 'ulimit -c unlimited && exec sleep 600'], { cwd: control, stdio: 'ignore' });
    const dumped = new Promise<NodeJS.Signals | null>((resolve) => dumpable.once('exit', (_code, signal) => resolve(signal)));
    await waitUntil('the control process runs sleep', () => readFileSync(`/proc/${dumpable.pid as number}/comm`, 'utf8').trim() === 'sleep');
    dumpable.kill('SIGSEGV');
    assert.equal(await dumped, 'SIGSEGV');
    assert.equal(readdirSync(control).filter((f) => f.startsWith('core')).length, 1, `a dumpable process leaves a core in its cwd (core_pattern ${readFileSync('/proc/sys/kernel/core_pattern', 'utf8').trim()})`);

    const sub = mkdtempSync(join(dir, 'core-'));
    const configPath = join(sub, 'portcullis.yaml');
    writeFileSync(configPath, stringify({ ...config, socket: { path: join(sub, 'portcullis.sock') } }));
    // The same daemon, with core dumps allowed by the limit and written to its cwd: only dumpable=0 can stop one.
    const child = spawn('/bin/sh', ['-c', `ulimit -c unlimited && exec "${process.execPath}" "${daemonMain}" --config "${configPath}"`], { cwd: sub, stdio: 'ignore' });
    const exited = new Promise<NodeJS.Signals | null>((resolve) => child.once('exit', (_code, signal) => resolve(signal)));
    for (let i = 0; i < 300 && !existsSync(join(sub, 'portcullis.sock')); i++) await new Promise((r) => setTimeout(r, 100));
    assert.ok(existsSync(join(sub, 'portcullis.sock')), 'the daemon started');
    child.kill('SIGSEGV');
    assert.equal(await exited, 'SIGSEGV');
    assert.deepEqual(readdirSync(sub).filter((f) => f.startsWith('core')), []);
  });
});
