import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, lstatSync, mkdtempSync, openSync, readlinkSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { localDeviceOps } from '../../../src/luks/device/ops.js';
import { rejectsWithCode } from '../../helpers/errors.js';
import { waitUntil } from '../../helpers/wait.js';

const dir = mkdtempSync(join(tmpdir(), 'portcullis-ops-'));

describe('localDeviceOps()', () => {
  it('read() serves many concurrent reads of healthy devices, beyond maxReads', async () => {
    const file = join(dir, 'many');
    writeFileSync(file, Buffer.alloc(4096, 7));
    const reads = await Promise.all(Array.from({ length: 16 }, () => localDeviceOps(undefined, { maxReads: 2 }).read(file, 0, 4096)));
    const shared = localDeviceOps(undefined, { maxReads: 2 });
    const together = await Promise.all(Array.from({ length: 16 }, () => shared.read(file, 0, 4096)));
    assert.ok([...reads, ...together].every((b) => b.length === 4096 && b[0] === 7));
  });

  const ops = localDeviceOps();

  it('stat() resolves symlinks and says what is there; undefined for nothing or a dangling link', async () => {
    symlinkSync('/dev/null', join(dir, 'null-link'));
    symlinkSync(join(dir, 'nowhere'), join(dir, 'dangling'));
    assert.deepEqual(await ops.stat(join(dir, 'null-link')), { path: '/dev/null', block: false, rdev: '1:3', symlink: true });
    assert.equal(await ops.stat(join(dir, 'nowhere')), undefined);
    assert.equal(await ops.stat(join(dir, 'dangling')), undefined);
  });

  it('read() answers the bytes at an offset, fewer at the end; refuses reads out of range with EINVAL', async () => {
    const file = join(dir, 'data');
    writeFileSync(file, Buffer.from('0123456789'));
    assert.equal((await ops.read(file, 2, 3)).toString(), '234');
    assert.equal((await ops.read(file, 8, 100)).toString(), '89');
    await rejectsWithCode(ops.read(file, -1, 3), 'EINVAL');
    await rejectsWithCode(ops.read(file, 0, 64 * 1024 * 1024), 'EINVAL');
    await rejectsWithCode(ops.read(join(dir, 'absent'), 0, 1), 'ENOENT');
  });

  it('readFiles() answers each file trimmed, undefined for one that cannot be read; list() undefined for no directory', async () => {
    writeFileSync(join(dir, 'attr'), '1\n');
    assert.deepEqual(await ops.readFiles([join(dir, 'attr'), join(dir, 'absent')]), ['1', undefined]);
    assert.ok((await ops.list(dir))?.includes('attr'));
    assert.equal(await ops.list(join(dir, 'absent')), undefined);
  });

  it('readFiles() rejects with EMFILE when out of descriptors, rather than answer undefined for a file that is there', () => {
    // A child with a low descriptor limit, every descriptor taken: "cannot be read" must not mean "not there".
    const ops = new URL('../../../src/luks/device/ops.js', import.meta.url).href;
    const script = `import { openSync } from 'node:fs'; import { localDeviceOps } from '${ops}';
      try { for (;;) openSync('/dev/null', 'r'); } catch {}
      localDeviceOps().readFiles(['/proc/self/stat']).then((r) => console.log('answered', JSON.stringify(r)), (e) => console.log('rejected', e.code));`;
    const out = execFileSync('sh', ['-c', `ulimit -n 128 && exec "$0" --input-type=module -e "$1"`, process.execPath, script], { encoding: 'utf8' });
    assert.equal(out.trim(), 'rejected EMFILE');
  });

  it('replaceSymlink() repoints a symlink atomically, and leaves anything that is not a symlink alone', async () => {
    const link = join(dir, 'attachment');
    symlinkSync('/dev/null', link);
    assert.equal(await ops.replaceSymlink(link, '/dev/mapper/crypt-x'), undefined);
    assert.equal(readlinkSync(link), '/dev/mapper/crypt-x');
    const node = join(dir, 'node');
    writeFileSync(node, 'not a link');
    assert.equal(await ops.replaceSymlink(node, '/dev/mapper/crypt-x'), 'the device path is not a symlink');
    assert.ok(!lstatSync(node).isSymbolicLink());
  });

  it('a read whose I/O hangs is answered READ_TIMEOUT, and while it hangs no more than maxReads run: the others wait, bounded', async () => {
    // Opening a FIFO blocks until a writer comes: a pool thread held the way a hung device read holds one.
    const fifo = join(dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    const gated = localDeviceOps(undefined, { readTimeoutMs: 200, maxReads: 1 });
    const err = await rejectsWithCode(gated.read(fifo, 0, 1), 'READ_TIMEOUT');
    assert.match(err.message, /did not finish within 200 ms/);
    // The hung read still holds the only slot: the next waits for it, and gives up at its own timeout.
    const waited = await rejectsWithCode(gated.read(join(dir, 'data'), 0, 1), 'READ_TIMEOUT');
    assert.match(waited.message, /1 device read\(s\) still running/);
    // Let the hung read end; its slot comes back.
    closeSync(openSync(fifo, 'w'));
    let answer: Buffer | undefined;
    await waitUntil('the slot back once the hung read ended', async () => (answer = await gated.read(join(dir, 'data'), 0, 1).catch(() => undefined)) !== undefined, { timeoutMs: 10_000, intervalMs: 50 });
    assert.equal(answer?.toString(), '0');
  });
});
