/**
 * The installed daemon across a reboot (issue 20; docs/api.md "What survives
 * a reboot"): in a first boot of a systemd guest the agent attaches a LUKS2
 * volume and an ephemeral disk and the guest shuts down with both mapped; the
 * second boot of the same disk finds the records on disk as the first boot
 * left them and nothing mapped, and the daemon, started by its socket, drops
 * the volume's record (its mapping ended with the boot) and keeps the
 * ephemeral disk's for its erase. The disks' data and keys are intact.
 */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Guest, PROJECT, buildDeb, createKeys, installPortcullis, note } from './whole-system.js';
import { tempDir } from './helpers.js';

interface Attached { opened: boolean; formatted: boolean }
interface Records { version: number; boot_id: string | null; volumes: Record<string, { device: string | null; rdev?: string; keyScope?: string; luksUuid?: string }> }

const EPHEMERAL = 'ephemeral-inst1+disk0';
/** Written to the volume in the first boot, read back in the second. */
const MARK = 'portcullis whole-system reboot mark';

let g: Guest;
let dir: string;
let keyId = '';
let firstBoot = '';
let firstRecords: Records;
const started = Date.now();

const records = async (): Promise<Records> => JSON.parse(await g.sh('cat /var/lib/portcullis/volumes.json')) as Records;
const bootId = async (): Promise<string> => g.sh('cat /proc/sys/kernel/random/boot_id');

before(async () => {
  const deb = buildDeb();
  dir = tempDir('wholesys-reboot');
  const disk = join(dir, 'disk.img');
  try {
    g = await Guest.boot(disk);
    await installPortcullis(g, deb.deb);
  } finally {
    deb.remove();
  }
  keyId = (await createKeys(g, ['wholesys-reboot']))[0] ?? '';
  await g.sh('systemctl enable --now portcullis.socket');
  const luks = await g.agentJson<Attached>(['attach', 'vol-luks', '--device', await g.loop('luks.img'), '--key-id', keyId, '--project', PROJECT, '--provider', 'luks2', '--format', 'if-blank']);
  assert.equal(luks.formatted, true);
  await g.sh(`printf '%s' '${MARK}' | dd of=/dev/mapper/vol-luks bs=512 conv=sync,fsync status=none`);
  await g.agentJson(['ephemeral', 'attach', 'inst1', 'disk0', '--device', await g.loop('ephemeral.img'), '--project', PROJECT]);
  firstBoot = await bootId();
  firstRecords = await records();
  // Hanging up ends the agent, whose unit reboots the guest: a clean shutdown with both still mapped.
  const down = Date.now();
  await g.vm.stop();
  note(`shutdown of the first boot: ${Date.now() - down} ms`);
  g = await Guest.boot(disk);
});

after(async () => {
  await g?.vm.stop();
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  note(`whole-system-reboot.vm.test wall time ${Date.now() - started} ms`);
});

describe('portcullis installed from its .deb, across a reboot of the host', () => {
  it('the first boot recorded both mappings with its boot id', () => {
    assert.equal(firstRecords.version, 2);
    assert.equal(firstRecords.boot_id, firstBoot);
    assert.deepEqual(Object.keys(firstRecords.volumes).sort(), [EPHEMERAL, 'vol-luks']);
    assert.match(firstRecords.volumes['vol-luks']?.rdev ?? '', /^\d+:\d+$/);
    assert.equal(firstRecords.volumes[EPHEMERAL]?.keyScope, 'instance');
  });

  it('after the reboot: the records on disk are as the first boot left them, nothing is mapped, only the socket is up', async () => {
    assert.notEqual(await bootId(), firstBoot);
    assert.deepEqual(await records(), firstRecords);
    assert.equal(await g.sh('dmsetup ls --target crypt'), 'No devices found');
    assert.equal(await g.sh('systemctl is-active portcullis.socket'), 'active');
    assert.equal((await g.run('systemctl is-active portcullis.service')).stdout.toString().trim(), 'inactive');
  });

  it("the daemon drops the volume's record and keeps the ephemeral disk's for its erase", async () => {
    const luksDev = await g.loop('luks.img');
    await g.loop('ephemeral.img');
    assert.deepEqual(await g.agentJson<unknown[]>(['volumes']), []);
    const line = (await g.journal())
      .map((e) => (typeof e.MESSAGE === 'string' && e.MESSAGE.startsWith('{') ? (JSON.parse(e.MESSAGE) as Record<string, unknown>) : {}))
      .find((l) => typeof l.message === 'string' && l.message.startsWith('volume records from an earlier boot'));
    assert.equal(line?.ephemeral, 1, 'one ephemeral record kept');
    const erased = await g.agentJson<{ keyslots_wiped: boolean; key_deleted: boolean }>(['ephemeral', 'detach', 'inst1', 'disk0', '--erase', '--project', PROJECT]);
    assert.deepEqual([erased.keyslots_wiped, erased.key_deleted], [true, true]);
    // Rewritten by the erase: this boot's id, and no record left: the volume's was dropped at start, the disk's by its erase.
    const now = await records();
    assert.deepEqual([now.boot_id, now.volumes], [await bootId(), {}]);
    // The LUKS volume opens again (not formatted) with its key, and holds what the first boot wrote.
    const again = await g.agentJson<Attached>(['attach', 'vol-luks', '--device', luksDev, '--key-id', keyId, '--project', PROJECT, '--provider', 'luks2']);
    assert.deepEqual([again.opened, again.formatted], [true, false]);
    assert.equal(await g.sh(`head -c ${MARK.length} /dev/mapper/vol-luks`), MARK);
    assert.deepEqual(Object.keys((await records()).volumes), ['vol-luks']);
    await g.agentJson(['detach', 'vol-luks']);
  });
});
