/**
 * Ephemeral disks through portcullisd with keys in a real Barbican, on a real
 * kernel: project- and instance-scoped keys, and crypto-erase.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { KeyManager } from '../../src/keyclient/key-manager.js';
import type { DaemonProcess } from '../fixtures/daemon.js';
import { rejectsWithCode } from '../helpers/errors.js';
import { startBarbicanDaemon, type BarbicanDaemon } from './barbican-daemon.js';
import { code, ok, type DaemonKernel } from './vm-setup.js';

let env: BarbicanDaemon;
let kernel: DaemonKernel;
let daemon: DaemonProcess;
let direct: KeyManager;

before(async () => {
  env = await startBarbicanDaemon();
  ({ kernel, daemon, direct } = env);
});
after(() => env?.stop());

describe('ephemeral disks', () => {
  it('project scope: two instances of one project share one key; another project is refused', async () => {
    const [d1, d2] = [await kernel.loopDevice(32), await kernel.loopDevice(32)];
    const first = ok<{ key_id: string; key_source: string; formatted: boolean; key_scope: string }>(
      await daemon.call('PUT', '/v1/ephemeral/pdi-1/disk0', { device: d1, key_scope: 'project', project_id: 'tenant-eph' }),
    );
    assert.equal(first.key_source, 'created');
    assert.equal(first.formatted, true);
    assert.equal(first.key_scope, 'project');
    const second = ok<{ key_id: string; formatted: boolean }>(await daemon.call('PUT', '/v1/ephemeral/pdi-2/disk0', { device: d2, key_scope: 'project', project_id: 'tenant-eph' }));
    assert.equal(second.key_id, first.key_id, 'the project key is found again by name');
    assert.equal(second.formatted, true);
    ok(await daemon.call('DELETE', '/v1/ephemeral/pdi-1/disk0'));
    const other = await daemon.call('PUT', '/v1/ephemeral/pdi-9/disk0', { device: d1, key_scope: 'project', project_id: 'tenant-other' });
    assert.equal(other.status, 404);
    assert.equal(code(other), 'E_KEY_NOT_FOUND');
    await kernel.sh('! test -e /dev/mapper/ephemeral-pdi-9+disk0');
    // The owner reattaches it: opened, not formatted again.
    const back = ok<{ formatted: boolean; key_id: string }>(await daemon.call('PUT', '/v1/ephemeral/pdi-1/disk0', { device: d1, key_scope: 'project', project_id: 'tenant-eph' }));
    assert.deepEqual([back.formatted, back.key_id], [false, first.key_id]);
    ok(await daemon.call('DELETE', '/v1/ephemeral/pdi-1/disk0'));
    ok(await daemon.call('DELETE', '/v1/ephemeral/pdi-2/disk0'));
  });

  it('instance scope: the key is created on first attach; erase wipes the keyslots and deletes it, so reattach fails with E_KEY_NOT_FOUND', async () => {
    const dev = await kernel.loopDevice(32);
    const first = ok<{ key_id: string; key_source: string }>(await daemon.call('PUT', '/v1/ephemeral/pdi-3/disk1', { device: dev, project_id: 'tenant-eph' }));
    assert.equal(first.key_source, 'created');
    await kernel.sh('echo secret-instance-data | dd of=/dev/mapper/ephemeral-pdi-3+disk1 conv=fsync status=none');
    const erased = ok<{ closed: boolean; erased: boolean; key_deleted: boolean }>(await daemon.call('DELETE', '/v1/ephemeral/pdi-3/disk1?erase=true', { project_id: 'tenant-eph' }));
    assert.deepEqual([erased.closed, erased.erased, erased.key_deleted], [true, true, true]);
    await kernel.sh(`cryptsetup luksDump ${dev} | grep -q 'Keyslots:' && ! cryptsetup luksDump ${dev} | grep -qE '^  [0-9]+: luks2'`);
    const again = await daemon.call('PUT', '/v1/ephemeral/pdi-3/disk1', { device: dev, project_id: 'tenant-eph', key: { id: first.key_id } });
    assert.equal(again.status, 404);
    assert.equal(code(again), 'E_KEY_NOT_FOUND');
    const byName = await daemon.call('PUT', '/v1/ephemeral/pdi-3/disk1', { device: dev, project_id: 'tenant-eph' });
    assert.equal(code(byName), 'E_KEY_NOT_FOUND', 'no fresh key for an erased disk');
    await rejectsWithCode(direct.get({ projectId: 'tenant-eph' }, first.key_id), 'E_KEY_NOT_FOUND');
  });
});
