/**
 * Crypto-erase in the service core, over the named fake host and a real
 * local keystore (service-kit.ts): an erase acts only on the disk it can
 * prove by its LUKS UUID and header token, never on what now sits at a
 * recorded path or major:minor, and deletes only a key created for that disk.
 * The same on a real kernel, with a reused loop minor: erase-safety.vm.test.ts.
 */
import assert from 'node:assert/strict';
import { after, beforeEach, describe, it } from 'node:test';
import { ephemeralMappingName } from '../../../src/daemon/service/ephemeral.js';
import { rejectsWithCode } from '../../helpers/errors.js';
import { peer, serviceKit, type ServiceKit } from './service-kit.js';

const ephemeralBody = (device: string, project: string) => ({ device, key_scope: 'instance' as const, project_id: project, provider: 'luks2', read_only: false, allow_discards: false });
const erases = (kit: ServiceKit) => kit.commands().filter((c) => c.includes('luksErase'));

describe('ephemeral erase', () => {
  let kit: ServiceKit;
  const kits: ServiceKit[] = [];
  beforeEach(async () => {
    kit = await serviceKit();
    kits.push(kit);
  });
  after(async () => {
    for (const k of kits) await k.close();
  });

  it('never erases another tenant\'s volume that now has the recorded major:minor; deleting the disk\'s own key is the erase', async () => {
    const a = await kit.ephemeral.attach('i1', 'd0', ephemeralBody('/dev/vdb', 'tenant-a'), peer);
    await kit.ephemeral.detach('i1', 'd0', false, undefined, peer);
    // The disk goes away; tenant B's new volume gets the same node and minor, is formatted and attached.
    kit.host.devices['/dev/vdb'] = { rdev: '253:16' };
    const bKey = await kit.keys.createKey({ projectId: 'tenant-b' }, { algorithm: 'aes', length: 512 });
    await kit.volumes.attach('vol-b', { device: '/dev/vdb', key: { id: bKey }, project_id: 'tenant-b', provider: 'luks2', format: 'if-blank', symlink: false, read_only: false, allow_discards: false }, peer);
    const erased = await kit.ephemeral.detach('i1', 'd0', true, { project_id: 'tenant-a' }, peer);
    assert.deepEqual(erases(kit), [], 'B\'s header was not touched');
    assert.deepEqual([erased.erased, erased.keyslots_wiped, erased.key_deleted], [true, false, true]);
    assert.ok(kit.host.mappings['vol-b'] !== undefined && kit.secrets.has('/dev/vdb'), 'B\'s volume is still mapped and still opens');
    await rejectsWithCode(kit.keys.get({ projectId: 'tenant-a' }, a.key_id ?? ''), 'E_KEY_NOT_FOUND');
  });

  it('a device named in the request is only a hint: one that is not the disk is refused, nothing erased or deleted', async () => {
    const a = await kit.ephemeral.attach('i2', 'd0', ephemeralBody('/dev/vdb', 'tenant-a'), peer);
    await kit.ephemeral.detach('i2', 'd0', false, undefined, peer);
    const other = await kit.ephemeral.attach('i3', 'd0', ephemeralBody('/dev/vdc', 'tenant-a'), peer);
    await kit.ephemeral.detach('i3', 'd0', false, undefined, peer);
    await rejectsWithCode(kit.ephemeral.detach('i2', 'd0', true, { project_id: 'tenant-a', device: '/dev/vdc' }, peer), 'E_ERASE_REFUSED');
    assert.deepEqual(erases(kit), []);
    assert.ok((await kit.keys.get({ projectId: 'tenant-a' }, a.key_id ?? '')).id);
    assert.ok((await kit.keys.get({ projectId: 'tenant-a' }, other.key_id ?? '')).id);
  });

  it('refuses a disk that another mapping holds, whatever its name', async () => {
    await kit.ephemeral.attach('i4', 'd0', ephemeralBody('/dev/vdb', 'tenant-a'), peer);
    await kit.ephemeral.detach('i4', 'd0', false, undefined, peer);
    kit.host.mappings['someone-else'] = { uuid: 'CRYPT-LUKS2-x-someone-else', slave: 'vdb', slaveRdev: '253:16' };
    await rejectsWithCode(kit.ephemeral.detach('i4', 'd0', true, { project_id: 'tenant-a' }, peer), 'E_DEVICE_BUSY');
    assert.deepEqual(erases(kit), []);
    assert.ok(kit.secrets.has('/dev/vdb'));
  });

  it('after a reboot the record is still there and the disk is proven by its header, not its old major:minor', async () => {
    const name = ephemeralMappingName('i5', 'd0');
    await kit.ephemeral.attach('i5', 'd0', ephemeralBody('/dev/vdb', 'tenant-a'), peer);
    await kit.ephemeral.detach('i5', 'd0', false, undefined, peer);
    const rebooted = kit.restart('boot-2');
    assert.equal(rebooted.registry.get(name)?.detached, true);
    assert.equal(rebooted.registry.get(name)?.rdev, undefined, 'a major:minor of another boot names nothing');
    const erased = await rebooted.ephemeral.detach('i5', 'd0', true, { project_id: 'tenant-a' }, peer);
    assert.deepEqual([erased.keyslots_wiped, erased.key_deleted], [true, true]);
    assert.deepEqual(erases(kit), ['cryptsetup --batch-mode luksErase /dev/vdb']);
  });

  it('a mapping still open at a crash and closed since is not pruned: its record waits for the erase', async () => {
    const name = ephemeralMappingName('i6', 'd0');
    await kit.ephemeral.attach('i6', 'd0', ephemeralBody('/dev/vdb', 'tenant-a'), peer);
    // The mapping goes without the daemon marking the record (a crash between close and record).
    delete kit.host.mappings[name];
    const restarted = kit.restart();
    await restarted.volumes.adopt();
    await restarted.volumes.list();
    assert.equal(restarted.registry.get(name)?.detached, true);
    const erased = await restarted.ephemeral.detach('i6', 'd0', true, { project_id: 'tenant-a' }, peer);
    assert.equal(erased.keyslots_wiped, true);
  });

  it('with its record lost, the disk is found on the host by its header token and erased, never answered "never attached"', async () => {
    const name = ephemeralMappingName('i7', 'd0');
    await kit.ephemeral.attach('i7', 'd0', ephemeralBody('/dev/vdc', 'tenant-a'), peer);
    await kit.ephemeral.detach('i7', 'd0', false, undefined, peer);
    kit.registry.delete(name);
    const erased = await kit.ephemeral.detach('i7', 'd0', true, { project_id: 'tenant-a' }, peer);
    assert.deepEqual([erased.keyslots_wiped, erased.key_deleted], [true, true]);
    assert.deepEqual(erases(kit), ['cryptsetup --batch-mode luksErase /dev/vdc']);
    // Another project's erase of the same name finds nothing of its own.
    await rejectsWithCode(kit.ephemeral.detach('i7', 'd0', true, { project_id: 'tenant-z' }, peer), 'E_VOLUME_NOT_FOUND');
  });
});
