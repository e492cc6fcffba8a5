/**
 * Crypto-erase on a real kernel, as a compute host lives: device minors are
 * reused, the daemon restarts, records get lost, detaches come through the
 * volumes route. An erase proves the disk by its LUKS UUID and header token
 * before it wipes anything, never trusting a path or a major:minor; it
 * deletes only a key created for that disk; and it never silently does
 * nothing. Also on the kernel: the blank check sees a file system 1 MiB in,
 * and a mapping is never a backing device. (The same rules over the named
 * fake host: test/daemon/service/erase.test.ts.)
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { DaemonProcess } from '../fixtures/daemon.js';
import { code, createKeyIn, daemonKernel, ok, type DaemonKernel } from './vm-setup.js';

let kernel: DaemonKernel;
const dir = mkdtempSync(join(tmpdir(), 'portcullisd-erase-'));
const config = { key_manager: { backend: 'local', local: { path: `${dir}/keystore.db`, kek_file: `${dir}/kek` } }, log: { format: 'json' } };
let daemon: DaemonProcess;

before(async () => {
  kernel = await daemonKernel();
  daemon = await kernel.daemon({ dir, config });
});
after(() => kernel?.cleanup());

async function restart(): Promise<void> {
  await daemon.stop();
  daemon = await kernel.daemon({ dir, config });
}

interface Erased {
  erased: boolean;
  keyslots_wiped: boolean;
  key_deleted: boolean;
}

/** The enabled keyslots of a LUKS2 device, as cryptsetup itself lists them; fails when luksDump does. */
async function keyslots(dev: string): Promise<number> {
  const dump = await kernel.sh(`cryptsetup luksDump ${dev}`);
  assert.match(dump, /^Keyslots:/m, 'luksDump printed a header');
  return (dump.match(/^ {2}\d+: luks2$/gm) ?? []).length;
}

const ephemeral = (device: string, project: string) => ({ device, project_id: project });

describe('erase on a host where minors are reused and daemons restart', () => {
  it('a reused loop minor: erasing tenant A\'s disk never touches tenant B\'s volume now at the same node; A\'s own key goes', async () => {
    const dev = await kernel.loopDevice(32);
    const a = ok<{ key_id: string; formatted: boolean }>(await daemon.call('PUT', '/v1/ephemeral/pdi-ra/disk0', ephemeral(dev, 'tenant-a')));
    assert.equal(a.formatted, true);
    assert.match(await kernel.sh(`cryptsetup luksDump ${dev}`), /portcullis-disk/, 'the header carries the token');
    ok(await daemon.call('DELETE', '/v1/ephemeral/pdi-ra/disk0'));
    // A's disk goes away; B's new disk gets the same node and minor.
    const fileA = await kernel.sh(`losetup -nO BACK-FILE ${dev}`);
    const fileB = `${fileA}.b`;
    const minor = await kernel.sh(`stat -c %T ${dev}`);
    await kernel.sh(`truncate -s 32M ${fileB} && losetup -d ${dev} && losetup ${dev} ${fileB}`);
    assert.equal(await kernel.sh(`stat -c %T ${dev}`), minor, 'the same minor, another disk');
    const bKey = createKeyIn(daemon, 'tenant-b');
    ok(await daemon.call('PUT', '/v1/volumes/pd-tenant-b', { device: dev, key: { id: bKey }, project_id: 'tenant-b', provider: 'luks2', format: 'if-blank' }));
    const bData = await kernel.sh('yes tenant-b | head -c 1048576 | dd of=/dev/mapper/pd-tenant-b bs=1M conv=fsync status=none && head -c 1048576 /dev/mapper/pd-tenant-b | sha256sum');
    // The agent's erase of A (a retry after a lost answer, say).
    const erased = ok<Erased>(await daemon.call('DELETE', '/v1/ephemeral/pdi-ra/disk0?erase=true', { project_id: 'tenant-a' }));
    assert.deepEqual([erased.erased, erased.keyslots_wiped, erased.key_deleted], [true, false, true]);
    assert.equal(await keyslots(dev), 1, 'B\'s keyslot is intact');
    assert.equal(await kernel.sh('head -c 1048576 /dev/mapper/pd-tenant-b | sha256sum'), bData, 'and B\'s data reads back');
    // A's disk shows up again at another node: a named erase proves it by its header and wipes it.
    const again = await kernel.sh(`losetup --find --show ${fileA}`);
    const wiped = ok<Erased>(await daemon.call('DELETE', '/v1/ephemeral/pdi-ra/disk0?erase=true', { project_id: 'tenant-a', device: again }));
    assert.equal(wiped.keyslots_wiped, true);
    assert.equal(await keyslots(again), 0);
    await kernel.sh(`losetup -d ${again}`);
    ok(await daemon.call('DELETE', '/v1/volumes/pd-tenant-b'));
  });

  it('after a daemon restart the records are still on disk: the erase of a detached disk wipes it', async () => {
    const dev = await kernel.loopDevice(32);
    ok(await daemon.call('PUT', '/v1/ephemeral/pdi-rs/disk0', ephemeral(dev, 'tenant-a')));
    ok(await daemon.call('DELETE', '/v1/ephemeral/pdi-rs/disk0'));
    await restart();
    const erased = ok<Erased>(await daemon.call('DELETE', '/v1/ephemeral/pdi-rs/disk0?erase=true', { project_id: 'tenant-a' }));
    assert.deepEqual([erased.keyslots_wiped, erased.key_deleted], [true, true]);
    assert.equal(await keyslots(dev), 0);
  });

  it('with the records file lost, the erase finds the disk by its header token and wipes it, never answering "never attached"', async () => {
    const dev = await kernel.loopDevice(32);
    ok(await daemon.call('PUT', '/v1/ephemeral/pdi-rl/disk0', ephemeral(dev, 'tenant-a')));
    ok(await daemon.call('DELETE', '/v1/ephemeral/pdi-rl/disk0'));
    await daemon.stop();
    rmSync(join(dir, 'volumes.json'));
    daemon = await kernel.daemon({ dir, config });
    const erased = ok<Erased>(await daemon.call('DELETE', '/v1/ephemeral/pdi-rl/disk0?erase=true', { project_id: 'tenant-a' }));
    assert.deepEqual([erased.keyslots_wiped, erased.key_deleted], [true, true]);
    assert.equal(await keyslots(dev), 0);
  });

  it('a detach through the volumes route (or the CLI\'s portcullis detach) keeps the record: the erase still wipes', async () => {
    const dev = await kernel.loopDevice(32);
    ok(await daemon.call('PUT', '/v1/ephemeral/pdi-rv/disk0', ephemeral(dev, 'tenant-a')));
    ok(await daemon.call('DELETE', '/v1/volumes/ephemeral-pdi-rv+disk0'));
    ok(await daemon.call('GET', '/v1/volumes'));
    const erased = ok<Erased>(await daemon.call('DELETE', '/v1/ephemeral/pdi-rv/disk0?erase=true', { project_id: 'tenant-a' }));
    assert.equal(erased.keyslots_wiped, true);
    assert.equal(await keyslots(dev), 0);
  });
});

describe('what is never formatted or mapped over', () => {
  it('a file system 1 MiB in behind a wiped partition table, which blkid -p does not see, is not blank', async () => {
    const dev = await kernel.loopDevice(32);
    await kernel.sh(`mkfs.ext4 -q -F -E offset=1048576 ${dev} 16M`);
    await kernel.sh(`blkid -p ${dev}; test $? -eq 2`);
    const before = await kernel.sha(dev, 16 * 1024 * 1024);
    const answer = await daemon.call('PUT', '/v1/ephemeral/pdi-bl/disk0', ephemeral(dev, 'tenant-a'));
    assert.equal(answer.status, 422);
    assert.equal(code(answer), 'E_DEVICE_NOT_BLANK');
    assert.equal(await kernel.sha(dev, 16 * 1024 * 1024), before, 'not a byte written');
  });

  it('a mapping is never a backing device: /dev/mapper/X of an own volume is refused, nothing mapped', async () => {
    const dev = await kernel.loopDevice(32);
    const key = createKeyIn(daemon, 'tenant-a');
    ok(await daemon.call('PUT', '/v1/volumes/pd-under', { device: dev, key: { id: key }, project_id: 'tenant-a', provider: 'luks2', format: 'if-blank' }));
    const over = await daemon.call('PUT', '/v1/volumes/pd-over', { device: '/dev/mapper/pd-under', key: { id: key }, project_id: 'tenant-a', provider: 'luks2', format: 'if-blank' });
    assert.equal(over.status, 422);
    assert.equal(code(over), 'E_DEVICE_IS_MAPPING');
    await kernel.sh('! test -e /dev/mapper/pd-over');
    ok(await daemon.call('DELETE', '/v1/volumes/pd-under'));
  });
});
