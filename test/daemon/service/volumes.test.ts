/**
 * Volumes in the service core, over the named fake host and a real local
 * keystore (service-kit.ts): what is mapped over what, what a read-only
 * attach may write, and which retries are the same request.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { ephemeralMappingName } from '../../../src/daemon/service/ephemeral.js';
import { rejectsWithCode } from '../../helpers/errors.js';
import { luks2Head } from '../../luks/fake-host.js';
import { peer, serviceKit, type ServiceKit } from './service-kit.js';

const attachBody = (device: string, keyId: string, more: Record<string, unknown> = {}) => ({
  device, key: { id: keyId }, project_id: 'p-vol', provider: 'luks2', format: 'if-blank' as const, symlink: false, read_only: false, allow_discards: false, ...more,
});

describe('volume attach', () => {
  let kit: ServiceKit;
  let keyId: string;
  before(async () => {
    kit = await serviceKit({ devices: { '/dev/vdb': { rdev: '253:16' }, '/dev/vdc': { rdev: '253:32' }, '/dev/vdd': { rdev: '253:48' }, '/dev/vde': { rdev: '253:64' } }, luks: { upgrade_keyslots: true } });
    keyId = await kit.keys.createKey({ projectId: 'p-vol' }, { algorithm: 'aes', length: 512 });
  });
  after(() => kit.close());

  it('a device that is a dm-crypt mapping (our own volume\'s cleartext) is refused as a backing device; nothing runs', async () => {
    await kit.volumes.attach('vol-under', attachBody('/dev/vdb', keyId), peer);
    const before = kit.commands().length;
    await rejectsWithCode(kit.volumes.attach('vol-over', attachBody('/dev/mapper/vol-under', keyId), peer), 'E_DEVICE_IS_MAPPING');
    assert.deepEqual(kit.commands().slice(before), []);
    await kit.volumes.detach('vol-under', { deferred: false });
  });

  it('a read-only attach writes nothing, not even the keyslot upgrade a read-write attach does', async () => {
    // A volume os-brick formatted: a slow argon2id keyslot, which luks.upgrade_keyslots rewrites on a read-write attach.
    const slow = { '0': { kdf: { type: 'argon2id', time: 4, memory: 1048576 } } };
    await kit.volumes.attach('vol-fmt', attachBody('/dev/vdc', keyId), peer);
    await kit.volumes.detach('vol-fmt', { deferred: false });
    const uuid = kit.host.devices['/dev/vdc']?.head?.subarray(168, 204).toString('latin1');
    kit.host.devices['/dev/vdc'] = { rdev: '253:32', head: luks2Head(uuid ?? '', slow) };
    const writes = (from: number) => kit.commands().slice(from).filter((c) => /luksConvertKey|luksAddKey|luksKillSlot|luksChangeKey|luksFormat|token/.test(c));
    let from = kit.commands().length;
    const ro = await kit.volumes.attach('vol-ro', attachBody('/dev/vdc', keyId, { read_only: true, format: 'never' }), peer);
    assert.equal(ro.keyslot_upgraded, false);
    assert.deepEqual(writes(from), []);
    await kit.volumes.detach('vol-ro', { deferred: false });
    // The positive control: the same volume read-write gets its slot rewritten.
    from = kit.commands().length;
    await kit.volumes.attach('vol-rw', attachBody('/dev/vdc', keyId, { format: 'never' }), peer);
    assert.notDeepEqual(writes(from), [], 'a read-write attach does rewrite the slow slot');
    await kit.volumes.detach('vol-rw', { deferred: false });
  });

  it('the same request in another spelling is the same request: luks on a LUKS2 volume, a key id as href or UUID', async () => {
    const first = await kit.volumes.attach('vol-same', attachBody('/dev/vdd', keyId), peer);
    assert.equal(first.opened, true);
    const asLuks = await kit.volumes.attach('vol-same', attachBody('/dev/vdd', keyId, { provider: 'luks' }), peer);
    assert.equal(asLuks.opened, false, 'idempotent, not 409');
    const asHref = await kit.volumes.attach('vol-same', attachBody('/dev/vdd', `https://kms.example:9311/v1/secrets/${keyId}`), peer);
    assert.equal(asHref.opened, false, 'idempotent, not 409');
    await kit.volumes.detach('vol-same', { deferred: false });
  });

  it('an ephemeral mapping detached through the volumes API keeps its record, so its erase still knows the disk', async () => {
    const name = ephemeralMappingName('i-vapi', 'd0');
    await kit.ephemeral.attach('i-vapi', 'd0', { device: '/dev/vde', key_scope: 'instance', project_id: 'p-vol', provider: 'luks2', read_only: false, allow_discards: false }, peer);
    const detached = await kit.volumes.detach(name, { deferred: false });
    assert.equal(detached.closed, true);
    assert.equal(kit.registry.get(name)?.detached, true);
    await kit.volumes.list();
    assert.equal(kit.registry.get(name)?.detached, true, 'the volume list does not prune it');
    const erased = await kit.ephemeral.detach('i-vapi', 'd0', true, { project_id: 'p-vol' }, peer);
    assert.deepEqual([erased.erased, erased.keyslots_wiped, erased.key_deleted], [true, true, true]);
  });
});
