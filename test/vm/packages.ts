import { execFileSync, spawnSync } from 'node:child_process';
import { VmError } from './errors.js';

/**
 * Debian packages the VM harness needs on the host. The guest runs the host's
 * own binaries (its root is the host's over 9p), so cryptsetup, dmsetup,
 * losetup, blkid and mkfs.ext4 come from here too.
 */
export const VM_PACKAGES = [
  'qemu-system-x86', // qemu-system-x86_64 with 9p (virtfs) and virtio-serial
  'linux-image-amd64', // a kernel with dm-crypt, loop, 9p and overlay as modules
  'busybox-static', // the initramfs' only binary: must not need the host's libc
  'kmod', // modprobe --show-depends on the host, modprobe in the guest
  'cryptsetup-bin',
  'dmsetup',
  'util-linux', // losetup, blkid, setpriv
  'e2fsprogs', // mkfs.ext4, for tests that need a filesystem on a device
  'xz-utils', // to unpack .ko.xz modules of newer kernels
  'zstd', // to unpack .ko.zst modules
] as const;

/** apt-get may need to download qemu's dependencies; bounded all the same. */
const APT_TIMEOUT_MS = 15 * 60_000;

function installed(pkg: string): boolean {
  const r = spawnSync('dpkg-query', ['-W', '-f=${Status}', pkg], { encoding: 'utf8' });
  return r.status === 0 && r.stdout.startsWith('install ok installed');
}

/**
 * Installs whatever of VM_PACKAGES is missing (as root, with apt-get), once
 * per process.
 * @throws VmError E_VM_MISSING when something is missing and cannot be installed
 */
export function ensureVmPackages(log: (line: string) => void = () => {}): void {
  if (checked) return;
  if (spawnSync('dpkg-query', ['--version']).status !== 0) {
    throw new VmError('E_VM_MISSING', `The VM harness needs a Debian host (dpkg-query not found) with: ${VM_PACKAGES.join(' ')}`);
  }
  const missing = VM_PACKAGES.filter((p) => !installed(p));
  if (missing.length > 0) {
    if (process.getuid?.() !== 0) {
      throw new VmError('E_VM_MISSING', `Missing Debian packages for the VM harness: ${missing.join(' ')}; install them as root (apt-get install ${missing.join(' ')})`, {
        details: { missing },
      });
    }
    log(`installing Debian packages for the VM harness: ${missing.join(' ')}`);
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    try {
      execFileSync('apt-get', ['update', '-q'], { stdio: ['ignore', 'ignore', 'pipe'], env, timeout: APT_TIMEOUT_MS });
      execFileSync('apt-get', ['install', '-y', '-q', '--no-install-recommends', ...missing], {
        stdio: ['ignore', 'ignore', 'pipe'],
        env,
        timeout: APT_TIMEOUT_MS,
      });
    } catch (err) {
      const stderr = (err as { stderr?: Buffer }).stderr?.toString('utf8').trim().split('\n').slice(-5).join('\n') ?? '';
      throw new VmError('E_VM_MISSING', `apt-get install ${missing.join(' ')} failed: ${stderr || String(err)}`, { cause: err, details: { missing } });
    }
    const still = missing.filter((p) => !installed(p));
    if (still.length > 0) throw new VmError('E_VM_MISSING', `Still missing after apt-get install: ${still.join(' ')}`, { details: { missing: still } });
  }
  checked = true;
}
let checked = false;
