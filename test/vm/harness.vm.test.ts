/**
 * The VM harness itself, on whichever runner privileged tests get here: the
 * suite's shared VM, a VM of this file's own, or direct mode (on a host with
 * dm-crypt, or inside the VM). Real kernel, real cryptsetup, no mocks.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { release } from 'node:os';
import { after, before, describe, it } from 'node:test';
import { readFileVia, writeFileVia } from './files.js';
import { findKernel } from './initramfs.js';
import { privilegedRunner, type PrivilegedRunner } from './privileged.js';
import { startVm, type Vm } from './vm.js';
import { VmError } from './errors.js';

let runner: PrivilegedRunner;
const loops: string[] = [];

async function sh(script: string, stdin?: Buffer): Promise<string> {
  const r = await runner.run(['sh', '-c', script], { ...(stdin === undefined ? {} : { stdin }), timeoutMs: 120_000 });
  assert.equal(r.code, 0, `sh -c '${script}' failed on ${runner.where}: ${r.stderr.toString()}`);
  return r.stdout.toString().trim();
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

before(async () => {
  runner = await privilegedRunner();
});

after(async () => {
  if (runner === undefined) return;
  for (const dev of loops) await runner.run(['losetup', '-d', dev]).catch(() => undefined);
  await runner.stop();
});

describe('the privileged runner', () => {
  it('runs the installed Debian kernel (uname -r)', async () => {
    const expected = runner.mode === 'direct' ? release() : findKernel().version;
    assert.equal(await sh('uname -r'), expected);
    assert.match(runner.where, new RegExp(expected.replace(/\./g, '\\.')));
  });

  it('has a working device-mapper and cryptsetup', async () => {
    assert.match(await sh('dmsetup version'), /Driver version:\s+4\./);
    assert.match(await sh('cryptsetup --version'), /^cryptsetup 2\./);
  });

  it('sets up a loop device over a small file in its scratch directory', async () => {
    const file = `${runner.scratchDir}/harness-${randomBytes(4).toString('hex')}.img`;
    const dev = await sh(`truncate -s 8M ${file} && losetup --find --show ${file}`);
    loops.push(dev);
    assert.match(dev, /^\/dev\/loop\d+$/);
    assert.equal(await sh(`blockdev --getsize64 ${dev}`), String(8 * 1024 * 1024));
  });

  it('maps the loop device with dm-crypt, key on stdin, and the data is encrypted underneath', async () => {
    const dev = loops[0];
    assert.ok(dev !== undefined, 'needs the loop device of the test before');
    const name = `harness-${randomBytes(4).toString('hex')}`;
    const key = randomBytes(64);
    const open = await runner.run(
      ['cryptsetup', 'open', '--type', 'plain', '--cipher', 'aes-xts-plain64', '--key-size', '512', '--key-file=-', dev, name],
      { stdin: key, timeoutMs: 120_000 },
    );
    assert.equal(open.code, 0, open.stderr.toString());
    try {
      const pattern = Buffer.alloc(64 * 1024, 'portcullis ');
      await sh(`dd of=/dev/mapper/${name} bs=64k count=1 conv=fsync status=none`, pattern);
      assert.ok((await readFileVia(runner, `/dev/mapper/${name}`)).subarray(0, pattern.length).equals(pattern));
      const raw = (await runner.run(['dd', `if=${dev}`, 'bs=64k', 'count=1', 'status=none'])).stdout;
      assert.equal(raw.length, pattern.length);
      assert.ok(!raw.equals(pattern), 'the backing device holds ciphertext');
    } finally {
      const close = await runner.run(['cryptsetup', 'close', name], { timeoutMs: 120_000 });
      assert.equal(close.code, 0, close.stderr.toString());
    }
  });

  it('passes binary stdin through byte for byte and returns stdout likewise', async () => {
    const data = Buffer.concat([Buffer.from(Array.from({ length: 256 }, (_, i) => i)), randomBytes(256 * 1024)]);
    const r = await runner.run(['cat'], { stdin: data });
    assert.equal(r.code, 0);
    assert.ok(r.stdout.equals(data), 'cat echoed the same bytes');
    assert.equal(await sh('sha256sum | cut -d" " -f1', data), (await import('node:crypto')).createHash('sha256').update(data).digest('hex'));
    const empty = await runner.run(['cat']);
    assert.equal(empty.stdout.length, 0);
  });

  it('writes and reads files beside the kernel', async () => {
    const path = `${runner.scratchDir}/harness-${randomBytes(4).toString('hex')}.bin`;
    const data = randomBytes(4096);
    await writeFileVia(runner, path, data);
    assert.ok((await readFileVia(runner, path)).equals(data));
  });

  it('returns a failing command\'s exit code and stderr', async () => {
    const r = await runner.run(['sh', '-c', 'echo out; echo oops >&2; exit 3']);
    assert.deepEqual([r.code, r.signal, r.timedOut, r.stdout.toString(), r.stderr.toString()], [3, null, false, 'out\n', 'oops\n']);
    assert.equal((await runner.run(['false'])).code, 1);
  });

  it('rejects a command that cannot be started with E_RUN_SPAWN', async () => {
    await assert.rejects(
      runner.run(['/nonexistent/portcullis-no-such-binary']),
      (err: unknown) => err instanceof VmError && err.code === 'E_RUN_SPAWN' && err.details.errno === 'ENOENT',
    );
  });

  it('kills a command that hangs, with what it started, at its timeout', async () => {
    const r = await runner.run(['sh', '-c', 'sleep 600 & echo $!; wait'], { timeoutMs: 3000 });
    assert.equal(r.timedOut, true);
    assert.equal(r.code, null);
    assert.equal(r.signal, 'SIGKILL');
    const pid = r.stdout.toString().trim();
    assert.match(pid, /^\d+$/);
    const check = await runner.run(['kill', '-0', pid]);
    assert.notEqual(check.code, 0, 'the background sleep died with its process group');
  });

  it('answers concurrent commands each to its own caller', async () => {
    const results = await Promise.all(Array.from({ length: 8 }, (_, i) => runner.run(['sh', '-c', 'echo "$1"; exit "$1"', 'sh', String(i)])));
    assert.deepEqual(results.map((r) => [r.code, r.stdout.toString()]), Array.from({ length: 8 }, (_, i) => [i, `${i}\n`]));
  });

  it('refuses an empty argv before running anything', async () => {
    await assert.rejects(runner.run([]), (err: unknown) => err instanceof VmError && err.code === 'E_RUN_ARGUMENT');
  });
});

describe('the VM life cycle', () => {
  it('stop() ends qemu, is safe to call twice, and later runs reject with E_VM_STOPPED', async (t) => {
    if (runner.mode === 'direct') {
      t.skip('direct mode: no VM here (and none can nest inside the VM)');
      return;
    }
    // The runner's own VM when it has one; beside the suite's shared VM, a second one just for this.
    const vm: Vm = runner.vm ?? (await startVm());
    assert.equal(vm.kernel, findKernel().version);
    assert.ok(alive(vm.pid), 'qemu is running');
    await vm.stop();
    await vm.stop();
    assert.ok(!alive(vm.pid), 'qemu has exited');
    await assert.rejects(vm.run(['true']), (err: unknown) => err instanceof VmError && err.code === 'E_VM_STOPPED');
  });
});
