/**
 * The daemon as an operator installs it, on a real kernel (issue 20): the
 * .deb installed with apt in a guest whose PID 1 is systemd and whose
 * /dev/mapper nodes come from udev; portcullis.socket enabled; the agent's
 * user attaching and detaching LUKS2 and plain volumes through socket
 * activation, with portcullis.service's sandbox in force: the daemon as the
 * user portcullis with no device and CAP_IPC_LOCK alone, the privileged
 * helper as root in portcullis-helper.service; doctor and both units'
 * exposure scores. The daemon's life under systemd (reload, restart,
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
  it('installs with apt, makes the user, group and state directory, and enables nothing', async () => {
    await installPortcullis(g, deb.deb);
    assert.match(await g.sh("dpkg-query -W -f='${Status} ${Version}' portcullis"), /^install ok installed \d/);
    assert.match(await g.sh('getent passwd portcullis'), /^portcullis:x:[1-9]\d*:\d+:[^:]*:\/var\/lib\/portcullis:\/usr\/sbin\/nologin$/);
    assert.equal(await g.sh('stat -c "%a %U" /var/lib/portcullis'), '700 portcullis');
    const units = 'portcullis.socket portcullis.service portcullis-helper.socket portcullis-helper.service';
    assert.equal((await g.run(`systemctl is-enabled ${units}`)).stdout.toString(), 'disabled\ndisabled\ndisabled\nstatic\n');
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
    assert.equal(await g.sh('systemctl is-active portcullis.service portcullis-helper.socket portcullis-helper.service'), 'active\nactive\nactive');
    assert.equal(await g.sh('stat -c "%A %U %G" /run/portcullis-helper/helper.sock'), 'srw------- portcullis portcullis');
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

  it("runs the daemon as portcullis inside its unit's sandbox, with no device and CAP_IPC_LOCK alone", async () => {
    const p = await g.show('portcullis.service', [
      'User', 'ProtectSystem', 'ProtectHome', 'PrivateTmp', 'NoNewPrivileges', 'DevicePolicy', 'DeviceAllow', 'CapabilityBoundingSet', 'AmbientCapabilities',
      'SystemCallFilter', 'RestrictAddressFamilies', 'WatchdogUSec', 'ProtectKernelModules', 'RestrictNamespaces',
    ]);
    assert.deepEqual(
      [p.User, p.ProtectSystem, p.ProtectHome, p.PrivateTmp, p.NoNewPrivileges, p.DevicePolicy, p.WatchdogUSec, p.ProtectKernelModules],
      ['portcullis', 'strict', 'yes', 'yes', 'yes', 'closed', '30s', 'yes'],
    );
    // ProtectClock= adds a read-only char-rtc; no block device, no device-mapper control.
    assert.doesNotMatch(p.DeviceAllow ?? '', /block-|\/dev\/mapper/);
    assert.deepEqual([p.CapabilityBoundingSet, p.AmbientCapabilities], ['cap_ipc_lock', 'cap_ipc_lock']);
    assert.ok((p.SystemCallFilter ?? '').split(' ').length > 50, `SystemCallFilter: ${p.SystemCallFilter}`);
    assert.deepEqual((p.RestrictAddressFamilies ?? '').split(' ').sort(), ['AF_INET', 'AF_INET6', 'AF_UNIX']);
    // In force on the running process, not only declared.
    const pid = await mainPid();
    const uid = await g.sh('id -u portcullis');
    const status = await g.sh(`grep -E '^(Uid|CapBnd|CapEff|NoNewPrivs|Seccomp):' /proc/${pid}/status`);
    assert.match(status, new RegExp(`Uid:\\s+${uid}\\s+${uid}\\s+${uid}\\s+${uid}`));
    assert.match(status, /CapBnd:\s+0000000000004000/);
    assert.match(status, /CapEff:\s+0000000000004000/);
    assert.match(status, /NoNewPrivs:\s+1/);
    assert.match(status, /Seccomp:\s+2/);
    assert.equal(await g.sh(`cat /proc/${pid}/task/${pid}/children`), '', 'the daemon starts no process, not even a helper');
    const ro = await g.run(`nsenter -t ${pid} -m touch /etc/portcullis/written-by-daemon`);
    assert.match(ro.stderr.toString(), /Read-only file system/);
    await g.sh(`nsenter -t ${pid} -m sh -c 'touch /var/lib/portcullis/probe && rm /var/lib/portcullis/probe'`);
    // The device cgroup: in the daemon's cgroup even root cannot open a block device.
    const inCgroup = (unit: string, cmd: string): string => `sh -c 'echo $$ > /sys/fs/cgroup/system.slice/${unit}/cgroup.procs && exec ${cmd}'`;
    const dd = await g.run(inCgroup('portcullis.service', 'dd if=/dev/mapper/vol-luks of=/dev/null bs=4096 count=1 status=none'));
    assert.notEqual(dd.code, 0);
    assert.match(dd.stderr.toString(), /Operation not permitted/);
  });

  it("runs the helper as root inside its own unit's sandbox: CAP_SYS_ADMIN and block devices, no IP", async () => {
    const p = await g.show('portcullis-helper.service', ['User', 'DevicePolicy', 'DeviceAllow', 'CapabilityBoundingSet', 'RestrictAddressFamilies', 'IPAddressDeny', 'NoNewPrivileges', 'MemoryDenyWriteExecute']);
    assert.deepEqual([p.User, p.DevicePolicy, p.NoNewPrivileges, p.MemoryDenyWriteExecute], ['', 'closed', 'yes', 'yes']);
    assert.match(p.DeviceAllow ?? '', /\/dev\/mapper\/control rw/);
    assert.match(p.DeviceAllow ?? '', /block-\* rw|block-device-mapper rw|block-loop rw/);
    assert.equal(p.CapabilityBoundingSet, 'cap_ipc_lock cap_sys_admin');
    assert.deepEqual((p.RestrictAddressFamilies ?? '').split(' ').sort(), ['AF_ALG', 'AF_NETLINK', 'AF_UNIX']);
    const pid = await g.mainPid('portcullis-helper.service');
    const status = await g.sh(`grep -E '^(Uid|CapBnd|NoNewPrivs|Seccomp):' /proc/${pid}/status`);
    assert.match(status, /Uid:\s+0\s+0\s+0\s+0/);
    assert.match(status, /CapBnd:\s+0000000000204000/);
    assert.match(status, /NoNewPrivs:\s+1/);
    assert.match(status, /Seccomp:\s+2/);
    // Its argv names no key, and neither does its environment (keys only ever cross in its socket's frames).
    assert.equal(await g.sh(`tr '\\0' ' ' < /proc/${pid}/cmdline`), '/usr/lib/portcullis/helper/portcullis-helper --listen --allow-user portcullis --symlink-dir /dev');
    const inCgroup = (cmd: string): string => `sh -c 'echo $$ > /sys/fs/cgroup/system.slice/portcullis-helper.service/cgroup.procs && exec ${cmd}'`;
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

  it('systemd-analyze security rates both units', async () => {
    for (const [unit, most] of [['portcullis.service', 4.0], ['portcullis-helper.service', 4.0]] as const) {
      const out = await g.sh(`systemd-analyze security --no-pager ${unit} | tail -1`);
      const m = new RegExp(`Overall exposure level for ${unit.replace('.', '\\.')}: (\\d+\\.\\d) (\\S+)`).exec(out);
      assert.ok(m !== null, out);
      note(`systemd-analyze security ${unit}: ${m[1]} ${m[2]}`);
      assert.ok(Number(m[1]) <= most, `${unit}: exposure ${m[1]} (docs/install.md states the figure)`);
    }
    await g.agentJson<{ closed: boolean }>(['detach', 'vol-luks']);
  });
});
