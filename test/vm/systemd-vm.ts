/**
 * The systemd boot mode: the same kernel and 9p root as startVm(), but the
 * guest runs the host's systemd as PID 1, with udev, journald and the rest of
 * a real boot, so units can be tested as an operator's host runs them.
 *
 * The overlay's upper layer is an ext4 file system on a virtio disk whose
 * image is a host file: boot again with the same `disk` and the guest sees
 * what the first boot wrote (/etc, /var/lib, dpkg's database, backing files).
 * Before systemd starts, the guest init runs a script in the new root that
 * writes the harness' own unit (the guest agent, on the same virtio-serial
 * channel as startVm's) and masks what a test guest has no use for and TCG
 * makes slow. The host hanging up ends the agent, and its unit reboots the
 * guest cleanly (qemu's -no-reboot turns that into qemu exiting), so the disk
 * is consistent for the next boot.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, existsSync, openSync, ftruncateSync } from 'node:fs';
import { VmError } from './errors.js';
import { SYSTEMD_BOOT_MODULES } from './initramfs.js';
import { prepareBoot, writeGuestScript } from './qemu.js';
import { bootAgentVm, guestAgentPath, type Vm, type VmOptions } from './vm.js';

export interface SystemdVmOptions extends VmOptions {
  /** Host path of the disk image for the upper layer; made (ext4) when missing. */
  disk: string;
  /** Size of a new image. @default 2048 */
  diskMiB?: number;
}

/** The harness' unit in the guest. */
export const AGENT_UNIT = 'portcullis-vm-agent.service';

/**
 * Units masked in the guest. The host's own services (this root is a CI
 * container's), gettys on the serial console, timers, time sync, and the
 * ConditionNeedsUpdate= jobs (ldconfig, hwdb, journal catalog), which would
 * run on every boot because the overlay's /etc has no .updated stamp: each
 * costs seconds under TCG and none plays a part in what the tests observe.
 */
export const MASKED_UNITS = [
  'getty.target',
  'serial-getty@ttyS0.service',
  'postgresql.service',
  'e2scrub_reap.service',
  'open-iscsi.service',
  'iscsid.service',
  'iscsid.socket',
  'systemd-timesyncd.service',
  'systemd-pstore.service',
  'apt-daily.timer',
  'apt-daily-upgrade.timer',
  'dpkg-db-backup.timer',
  'e2scrub_all.timer',
  'fstrim.timer',
  'man-db.timer',
  'ldconfig.service',
  'systemd-hwdb-update.service',
  'systemd-journal-catalog-update.service',
  'systemd-update-done.service',
] as const;

/** After hang-up, a clean shutdown (units stopped, file systems synced) under TCG. */
const SHUTDOWN_GRACE_MS = 120_000;

function agentUnit(): string {
  return `[Unit]
Description=portcullis VM harness agent (test/vm/guest-agent.ts)
# The host hanging up ends the agent, and the guest with it: cleanly, so that
# the next boot of the same disk finds its file system in order.
SuccessAction=reboot
FailureAction=reboot

[Service]
ExecStart=${process.execPath} ${guestAgentPath}
`;
}

/** Runs in the guest's new root (chroot) on every boot, before systemd: idempotent. */
function prepareScript(): string {
  const dir = '/etc/systemd/system';
  return [
    'set -e',
    // systemd takes a root with /.dockerenv for a Docker container (no udev, ...): this root is the CI container's.
    'rm -f /.dockerenv /run/.containerenv',
    `mkdir -p ${dir}/multi-user.target.wants`,
    `cat > ${dir}/${AGENT_UNIT} <<'EOF'\n${agentUnit()}EOF`,
    `ln -sfn ../${AGENT_UNIT} ${dir}/multi-user.target.wants/${AGENT_UNIT}`,
    `for u in ${MASKED_UNITS.join(' ')}; do ln -sfn /dev/null ${dir}/$u; done`,
    // Debian's tmp.conf says "D /tmp": empty it at boot. The guest's /tmp is the host's (the checkout
    // itself may live there, as CI's /tmp/ci does, and with it the guest agent): keep it, and the 18 s
    // systemd-tmpfiles took to white out its contents in the overlay.
    "mkdir -p /etc/tmpfiles.d && printf 'd /tmp 1777 root root -\\n' > /etc/tmpfiles.d/tmp.conf",
    '',
  ].join('\n');
}

function makeDisk(path: string, mib: number): void {
  const fd = openSync(path, 'wx', 0o600);
  try {
    ftruncateSync(fd, mib * 1024 * 1024);
  } finally {
    closeSync(fd);
  }
  try {
    execFileSync('mkfs.ext4', ['-q', '-F', '-L', 'portcullis-vm', path], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (err) {
    throw new VmError('E_VM_MISSING', `mkfs.ext4 of the guest disk ${path} failed; install e2fsprogs`, { cause: err });
  }
}

/**
 * Boots (or boots again) the systemd guest on `options.disk` and returns once
 * its agent answers, i.e. once systemd has started the agent's unit; the
 * caller waits for the rest of the boot (`systemctl is-system-running --wait`).
 * @throws VmError E_VM_MISSING, E_VM_BOOT
 */
export function startSystemdVm(options: SystemdVmOptions): Promise<Vm> {
  if (!existsSync(options.disk)) makeDisk(options.disk, options.diskMiB ?? 2048);
  const prepared = prepareBoot(options.log, SYSTEMD_BOOT_MODULES);
  const script = writeGuestScript(prepareScript());
  return bootAgentVm(
    {
      prepared,
      script,
      // cache=unsafe: the guest's flushes are not forced to the host's disk; the image only has to outlive qemu, not the host.
      extraArgs: ['-drive', `file=${options.disk},if=virtio,format=raw,cache=unsafe`],
      // No fsck (no fstab; the upper file system is mounted by the initramfs).
      append: 'portcullis.upper=/dev/vda fsck.mode=skip',
      stopGraceMs: SHUTDOWN_GRACE_MS,
    },
    { bootTimeoutMs: 300_000, ...options },
  );
}
