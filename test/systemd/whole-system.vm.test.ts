/**
 * The daemon as an operator installs it, on a real kernel (issue 20): the
 * .deb installed with apt in a guest whose PID 1 is systemd and whose
 * /dev/mapper nodes come from udev; portcullis.socket enabled; the agent's
 * user attaching and detaching LUKS2 and plain volumes through socket
 * activation, with portcullis.service's sandbox in force; doctor and the
 * unit's exposure score. The daemon's life under systemd (reload, restart,
 * kill -9, watchdog, journal) is whole-system-lifecycle.vm.test.ts, the
 * second boot of such a guest whole-system-reboot.vm.test.ts: three files, so
 * that each stays under half its budget on a loaded machine.
 */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Guest, PROJECT, buildDeb, createKeys, installPortcullis, note } from './whole-system.js';
import { tempDir } from './helpers.js';

interface Attached { name: string; opened: boolean; formatted: boolean; provider: string }

let g: Guest;
let deb: { deb: string; remove: () => void };
let dir: string;
const keys: Record<'luks' | 'plain', string> = { luks: '', plain: '' };
const loops: Record<'luks' | 'plain', string> = { luks: '', plain: '' };
const started = Date.now();

before(async () => {
  deb = buildDeb();
  dir = tempDir('wholesys');
  g = await Guest.boot(join(dir, 'disk.img'));
});

after(async () => {
  await g?.vm.stop();
  deb?.remove();
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  note(`whole-system.vm.test wall time ${Date.now() - started} ms`);
});

const mainPid = (): Promise<string> => g.mainPid();
const crypt = async (): Promise<string> => g.sh('dmsetup ls --target crypt');

describe('portcullis installed from its .deb, under systemd and udev on a real kernel', () => {
  it('installs with apt, makes the group and state directory, and enables nothing', async () => {
    await installPortcullis(g, deb.deb);
    assert.match(await g.sh("dpkg-query -W -f='${Status} ${Version}' portcullis"), /^install ok installed \d/);
    assert.equal(await g.sh('stat -c %a /var/lib/portcullis'), '700');
    assert.equal((await g.run('systemctl is-enabled portcullis.socket portcullis.service')).stdout.toString(), 'disabled\ndisabled\n');
  });

  it('enables portcullis.socket: systemd owns the socket, the daemon is not started yet', async () => {
    const [luks = '', plain = ''] = await createKeys(g, ['wholesys-luks', 'wholesys-plain']);
    Object.assign(keys, { luks, plain });
    await g.sh('systemctl enable --now portcullis.socket');
    assert.equal(await g.sh('stat -c "%A %U %G" /run/portcullis/portcullis.sock'), 'srw-rw---- root portcullis');
    assert.deepEqual(await g.show('portcullis.service', ['ActiveState']), { ActiveState: 'inactive' });
  });

  it('attaches and detaches LUKS2 and plain volumes as the agent through socket activation, udev making the nodes', async () => {
    loops.luks = await g.loop('luks.img');
    loops.plain = await g.loop('plain.img');
    const luks = await g.agentJson<Attached>(['attach', 'vol-luks', '--device', loops.luks, '--key-id', keys.luks, '--project', PROJECT, '--provider', 'luks2', '--format', 'if-blank']);
    assert.deepEqual([luks.opened, luks.formatted], [true, true]);
    assert.equal(await g.sh('systemctl is-active portcullis.service'), 'active');
    const plain = await g.agentJson<Attached>(['attach', 'vol-plain', '--device', loops.plain, '--key-id', keys.plain, '--project', PROJECT, '--provider', 'plain']);
    assert.equal(plain.opened, true);
    assert.match(await g.sh('cryptsetup status vol-luks'), /type:\s+LUKS2/);
    assert.match(await g.sh('cryptsetup status vol-plain'), /type:\s+PLAIN/);
    for (const name of ['vol-luks', 'vol-plain']) {
      // udev made the node (libdevmapper's own would be a block file, not a link), ran its dm rules, and no cookie is left waiting.
      assert.match(await g.sh(`readlink /dev/mapper/${name}`), /^\.\.\/dm-\d+$/);
      assert.match(await g.sh(`udevadm info --query=property /dev/mapper/${name}`), new RegExp(`^DM_NAME=${name}$`, 'm'));
      assert.equal(await g.sh(`test -L /dev/disk/by-id/dm-name-${name} && echo link`), 'link');
    }
    assert.match(await g.sh('dmsetup udevcookies'), /^Cookie\s+Semid\s+Value.*$/);
    assert.equal((await g.sh('dmsetup udevcookies')).split('\n').length, 1, 'no udev cookie left');
    for (const name of ['vol-luks', 'vol-plain']) {
      const closed = await g.agentJson<{ closed: boolean }>(['detach', name]);
      assert.equal(closed.closed, true);
    }
    assert.equal(await crypt(), 'No devices found');
    // Attached again for what follows: opened, not formatted again.
    const again = await g.agentJson<Attached>(['attach', 'vol-luks', '--device', loops.luks, '--key-id', keys.luks, '--project', PROJECT, '--provider', 'luks2']);
    assert.deepEqual([again.opened, again.formatted], [true, false]);
  });

  it("runs the daemon inside the unit's sandbox", async () => {
    const p = await g.show('portcullis.service', [
      'ProtectSystem', 'ProtectHome', 'PrivateTmp', 'NoNewPrivileges', 'DevicePolicy', 'DeviceAllow', 'CapabilityBoundingSet',
      'SystemCallFilter', 'RestrictAddressFamilies', 'WatchdogUSec', 'ProtectKernelModules', 'RestrictNamespaces',
    ]);
    assert.deepEqual(
      [p.ProtectSystem, p.ProtectHome, p.PrivateTmp, p.NoNewPrivileges, p.DevicePolicy, p.WatchdogUSec, p.ProtectKernelModules],
      ['strict', 'yes', 'yes', 'yes', 'closed', '30s', 'yes'],
    );
    assert.match(p.DeviceAllow ?? '', /\/dev\/mapper\/control rw/);
    assert.match(p.DeviceAllow ?? '', /block-\* rw|block-device-mapper rw|block-loop rw/);
    assert.equal(p.CapabilityBoundingSet, 'cap_chown cap_ipc_lock cap_sys_admin');
    assert.ok((p.SystemCallFilter ?? '').split(' ').length > 50, `SystemCallFilter: ${p.SystemCallFilter}`);
    assert.deepEqual((p.RestrictAddressFamilies ?? '').split(' ').sort(), ['AF_ALG', 'AF_INET', 'AF_INET6', 'AF_NETLINK', 'AF_UNIX']);
    // In force on the running process, not only declared.
    const pid = await mainPid();
    const status = await g.sh(`grep -E '^(CapBnd|NoNewPrivs|Seccomp):' /proc/${pid}/status`);
    assert.match(status, /CapBnd:\s+0000000000204001/);
    assert.match(status, /NoNewPrivs:\s+1/);
    assert.match(status, /Seccomp:\s+2/);
    const ro = await g.run(`nsenter -t ${pid} -m touch /etc/portcullis/written-by-daemon`);
    assert.match(ro.stderr.toString(), /Read-only file system/);
    await g.sh(`nsenter -t ${pid} -m sh -c 'touch /var/lib/portcullis/probe && rm /var/lib/portcullis/probe'`);
    // The device cgroup: in the service's cgroup a block device opens, a character device outside the allowed few does not.
    const inCgroup = (cmd: string): string => `sh -c 'echo $$ > /sys/fs/cgroup/system.slice/portcullis.service/cgroup.procs && exec ${cmd}'`;
    await g.sh(inCgroup('dd if=/dev/mapper/vol-luks of=/dev/null bs=4096 count=1 status=none'));
    const kmsg = await g.run(inCgroup('head -c 1 /dev/kmsg'));
    assert.notEqual(kmsg.code, 0);
    assert.match(kmsg.stderr.toString(), /Operation not permitted/);
  });

  it('portcullis doctor finds everything ok', async () => {
    const r = await g.run('portcullis doctor --json', 120_000);
    assert.equal(r.code, 0, r.stdout.toString() + r.stderr.toString());
    const report = JSON.parse(r.stdout.toString()) as { ok: boolean; checks: Array<{ verdict: string; check: string; detail: string }> };
    assert.equal(report.ok, true);
    assert.deepEqual(report.checks.filter((f) => f.verdict !== 'ok'), []);
    assert.ok(report.checks.some((f) => f.check === 'daemon'), 'the daemon was asked');
  });

  it('systemd-analyze security rates the unit', async () => {
    const out = await g.sh('systemd-analyze security --no-pager portcullis.service | tail -1');
    const m = /Overall exposure level for portcullis\.service: (\d+\.\d) (\S+)/.exec(out);
    assert.ok(m !== null, out);
    note(`systemd-analyze security portcullis.service: ${m[1]} ${m[2]}`);
    assert.ok(Number(m[1]) <= 4.0, `exposure ${m[1]} (docs/install.md states the figure)`);
    await g.agentJson<{ closed: boolean }>(['detach', 'vol-luks']);
  });
});
