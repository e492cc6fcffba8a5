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
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { code, createKeyIn, fileDaemon, ok } from './vm-setup.js';

const host = fileDaemon('portcullisd-erase-');

interface Erased {
  erased: boolean;
  keyslots_wiped: boolean;
  key_deleted: boolean;
}

/** The enabled keyslots of a LUKS2 device, as cryptsetup itself lists them; fails when luksDump does. */
async function keyslots(dev: string): Promise<number> {
  const dump = await host.kernel.sh(`cryptsetup luksDump ${dev}`);
  assert.match(dump, /^Keyslots:/m, 'luksDump printed a header');
  return (dump.match(/^ {2}\d+: luks2$/gm) ?? []).length;
}

const ephemeral = (device: string, project: string) => ({ device, project_id: project });

describe('erase on a host where minors are reused and daemons restart', () => {
  it('a reused loop minor: erasing tenant A\'s disk never touches tenant B\'s volume now at the same node; A\'s own key goes', async () => {
    const dev = await host.kernel.loopDevice(32);
    const a = ok<{ key_id: string; formatted: boolean }>(await host.daemon.call('PUT', '/v1/ephemeral/pdi-ra/disk0', ephemeral(dev, 'tenant-a')));
    assert.equal(a.formatted, true);
    assert.match(await host.kernel.sh(`cryptsetup luksDump ${dev}`), /portcullis-disk/, 'the header carries the token');
    ok(await host.daemon.call('DELETE', '/v1/ephemeral/pdi-ra/disk0'));
    // A's disk goes away; B's new disk gets the same node and minor.
    const fileA = await host.kernel.sh(`losetup -nO BACK-FILE ${dev}`);
    const fileB = `${fileA}.b`;
    const minor = await host.kernel.sh(`stat -c %T ${dev}`);
    await host.kernel.sh(`truncate -s 32M ${fileB} && losetup -d ${dev} && losetup ${dev} ${fileB}`);
    assert.equal(await host.kernel.sh(`stat -c %T ${dev}`), minor, 'the same minor, another disk');
    const bKey = createKeyIn(host.daemon, 'tenant-b');
    ok(await host.daemon.call('PUT', '/v1/volumes/pd-tenant-b', { device: dev, key: { id: bKey }, project_id: 'tenant-b', provider: 'luks2', format: 'if-blank' }));
    const bData = await host.kernel.sh('yes tenant-b | head -c 1048576 | dd of=/dev/mapper/pd-tenant-b bs=1M conv=fsync status=none && head -c 1048576 /dev/mapper/pd-tenant-b | sha256sum');
    // The agent's erase of A (a retry after a lost answer, say).
    const erased = ok<Erased>(await host.daemon.call('DELETE', '/v1/ephemeral/pdi-ra/disk0?erase=true', { project_id: 'tenant-a' }));
    assert.deepEqual([erased.erased, erased.keyslots_wiped, erased.key_deleted], [true, false, true]);
    assert.equal(await keyslots(dev), 1, 'B\'s keyslot is intact');
    assert.equal(await host.kernel.sh('head -c 1048576 /dev/mapper/pd-tenant-b | sha256sum'), bData, 'and B\'s data reads back');
    // A's disk shows up again at another node: a named erase proves it by its header and wipes it.
    const again = await host.kernel.sh(`losetup --find --show ${fileA}`);
    const wiped = ok<Erased>(await host.daemon.call('DELETE', '/v1/ephemeral/pdi-ra/disk0?erase=true', { project_id: 'tenant-a', device: again }));
    assert.equal(wiped.keyslots_wiped, true);
    assert.equal(await keyslots(again), 0);
    await host.kernel.sh(`losetup -d ${again}`);
    ok(await host.daemon.call('DELETE', '/v1/volumes/pd-tenant-b'));
  });

  /** How the disk's record fares between its detach and its erase; the erase must wipe the disk in every case. */
  const between: Array<[string, string, (instance: string) => Promise<void>]> = [
    ['after a daemon restart the records are still on disk', 'pdi-rs', async () => void (await host.restart())],
    ['with the records file lost, the disk is found by its header token, never answered "never attached"', 'pdi-rl', async () =>
      void (await host.restart({ whileStopped: () => rmSync(join(host.dir, 'volumes.json')) }))],
    ['a detach through the volumes route (the CLI\'s portcullis detach) keeps the record', 'pdi-rv', async (instance) => {
      ok(await host.daemon.call('DELETE', `/v1/volumes/ephemeral-${instance}+disk0`));
      ok(await host.daemon.call('GET', '/v1/volumes'));
    }],
  ];
  for (const [title, instance, meanwhile] of between) {
    it(`${title}: the erase wipes the disk and deletes its key`, async () => {
      const dev = await host.kernel.loopDevice(32);
      ok(await host.daemon.call('PUT', `/v1/ephemeral/${instance}/disk0`, ephemeral(dev, 'tenant-a')));
      if (instance !== 'pdi-rv') ok(await host.daemon.call('DELETE', `/v1/ephemeral/${instance}/disk0`));
      await meanwhile(instance);
      const erased = ok<Erased>(await host.daemon.call('DELETE', `/v1/ephemeral/${instance}/disk0?erase=true`, { project_id: 'tenant-a' }));
      assert.deepEqual([erased.keyslots_wiped, erased.key_deleted], [true, true]);
      assert.equal(await keyslots(dev), 0);
    });
  }
});

describe('what is never formatted or mapped over', () => {
  it('a file system 1 MiB in behind a wiped partition table, which blkid -p does not see, is not blank', async () => {
    const dev = await host.kernel.loopDevice(32);
    await host.kernel.sh(`mkfs.ext4 -q -F -E offset=1048576 ${dev} 16M`);
    await host.kernel.sh(`blkid -p ${dev}; test $? -eq 2`);
    const before = await host.kernel.sha(dev, 16 * 1024 * 1024);
    const answer = await host.daemon.call('PUT', '/v1/ephemeral/pdi-bl/disk0', ephemeral(dev, 'tenant-a'));
    assert.equal(answer.status, 422);
    assert.equal(code(answer), 'E_DEVICE_NOT_BLANK');
    assert.equal(await host.kernel.sha(dev, 16 * 1024 * 1024), before, 'not a byte written');
  });

  it('a mapping is never a backing device: /dev/mapper/X of an own volume is refused, nothing mapped', async () => {
    const dev = await host.kernel.loopDevice(32);
    const key = createKeyIn(host.daemon, 'tenant-a');
    ok(await host.daemon.call('PUT', '/v1/volumes/pd-under', { device: dev, key: { id: key }, project_id: 'tenant-a', provider: 'luks2', format: 'if-blank' }));
    const over = await host.daemon.call('PUT', '/v1/volumes/pd-over', { device: '/dev/mapper/pd-under', key: { id: key }, project_id: 'tenant-a', provider: 'luks2', format: 'if-blank' });
    assert.equal(over.status, 422);
    assert.equal(code(over), 'E_DEVICE_IS_MAPPING');
    await host.kernel.sh('! test -e /dev/mapper/pd-over');
    ok(await host.daemon.call('DELETE', '/v1/volumes/pd-under'));
  });
});
