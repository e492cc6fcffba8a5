import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { accessSync, constants, existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { repoRoot } from '../helpers/paths.js';
import { cpioNewc, type CpioEntry } from './cpio.js';
import { VmError } from './errors.js';
import { GUEST_INIT, GUEST_MODPROBE } from './guest-init.js';

/** Where built initramfs images are cached (`.cache` is gitignored). */
export const vmCacheDir = join(repoRoot, '.cache', 'vm');

/**
 * Modules the initramfs loads itself, before the host root is there: virtio
 * PCI, 9p over virtio, overlayfs, and the virtio console for the command
 * channel. Everything else (dm-crypt, loop, crypto) is loaded later by the
 * host's own modprobe inside the chroot, which handles compression and
 * dependencies. The fixed order (virtio_ring, virtio, ...,
 * 9p, overlay) is what `modprobe --show-depends` yields for these.
 */
const BOOT_MODULES = ['virtio_pci', '9pnet_virtio', '9p', 'overlay', 'virtio_console'];

export interface Kernel {
  /** `uname -r` of the kernel, e.g. 6.1.0-56-amd64 */
  version: string;
  /** /boot/vmlinuz-VERSION */
  image: string;
}

/**
 * The newest installed kernel that has its modules, or PORTCULLIS_VM_KERNEL.
 * @throws VmError E_VM_MISSING
 */
export function findKernel(): Kernel {
  const wanted = process.env.PORTCULLIS_VM_KERNEL;
  const versions = existsSync('/boot')
    ? readdirSync('/boot')
        .filter((f) => f.startsWith('vmlinuz-'))
        .map((f) => f.slice('vmlinuz-'.length))
        .filter((v) => existsSync(`/lib/modules/${v}/modules.dep`))
    : [];
  const candidates = wanted === undefined ? versions : versions.filter((v) => v === wanted);
  const version = candidates.sort((a, b) => a.localeCompare(b, 'en', { numeric: true })).at(-1);
  if (version === undefined) {
    const what = wanted === undefined ? 'any kernel' : `kernel ${wanted} (PORTCULLIS_VM_KERNEL)`;
    throw new VmError('E_VM_MISSING', `Found no /boot/vmlinuz-* with modules under /lib/modules for ${what}; install linux-image-amd64`);
  }
  const image = `/boot/vmlinuz-${version}`;
  try {
    accessSync(image, constants.R_OK);
  } catch (err) {
    throw new VmError('E_VM_MISSING', `Cannot read the kernel image ${image}; run as root or make it readable`, { cause: err });
  }
  return { version, image };
}

/** .ko files in load order, as the host's modprobe resolves them for the guest kernel. */
function bootModulePaths(version: string, extra: readonly string[]): string[] {
  const wanted = [...BOOT_MODULES, ...extra];
  let out: string;
  try {
    out = execFileSync('modprobe', ['-a', '-S', version, '--show-depends', ...wanted], { encoding: 'utf8' });
  } catch (err) {
    throw new VmError('E_VM_MISSING', `modprobe --show-depends ${wanted.join(' ')} failed for kernel ${version}; is kmod installed?`, { cause: err });
  }
  const paths: string[] = [];
  for (const line of out.split('\n')) {
    const [verb, path] = line.trim().split(/\s+/);
    // "builtin NAME" lines need nothing; a module listed twice loads once.
    if (verb === 'insmod' && path !== undefined && !paths.includes(path)) paths.push(path);
  }
  return paths;
}

/** Busybox's insmod cannot unpack compressed modules, so unpack them here. */
function moduleBytes(path: string): Buffer {
  if (path.endsWith('.ko')) return readFileSync(path);
  if (path.endsWith('.ko.gz')) return gunzipSync(readFileSync(path));
  const tool = path.endsWith('.ko.xz') ? 'xz' : path.endsWith('.ko.zst') ? 'zstd' : undefined;
  if (tool === undefined) throw new VmError('E_VM_MISSING', `Unknown module compression: ${path}`);
  try {
    return execFileSync(tool, ['-dc', path], { maxBuffer: 64 * 1024 * 1024 });
  } catch (err) {
    throw new VmError('E_VM_MISSING', `Cannot unpack ${path} with ${tool}; install ${tool === 'xz' ? 'xz-utils' : 'zstd'}`, { cause: err });
  }
}

function findBusybox(): string {
  for (const path of ['/bin/busybox', '/usr/bin/busybox']) {
    if (!existsSync(path)) continue;
    // A dynamically linked busybox would need the host's libc inside the initramfs.
    const head = readFileSync(path).subarray(0, 4096).toString('latin1');
    if (!head.includes('/lib64/ld-linux') && !head.includes('/lib/ld-linux')) return path;
  }
  throw new VmError('E_VM_MISSING', 'No static busybox found (/bin/busybox); install busybox-static');
}

/**
 * Modules the systemd boot mode adds (systemd-vm.ts): the virtio disk that
 * holds the overlay's persistent upper layer, and its file system.
 */
export const SYSTEMD_BOOT_MODULES = ['virtio_blk', 'ext4'] as const;

/**
 * Builds the initramfs for `kernel`, or returns the cached one. The cache key
 * covers the kernel version, the init script and the exact busybox and module
 * bytes, so any change rebuilds. `extraModules` (with their dependencies) are
 * loaded after BOOT_MODULES; each set is an image of its own.
 * @returns path of the .cpio image
 */
export function ensureInitramfs(kernel: Kernel, extraModules: readonly string[] = []): string {
  const busybox = readFileSync(findBusybox());
  const modules = bootModulePaths(kernel.version, extraModules).map((path, i) => ({
    name: `${String(i).padStart(2, '0')}-${basename(path).replace(/\.ko(\.\w+)?$/, '.ko')}`,
    data: moduleBytes(path),
  }));
  const hash = createHash('sha256');
  hash.update(`v1\0${kernel.version}\0${GUEST_INIT}\0${GUEST_MODPROBE}\0`);
  hash.update(busybox);
  for (const m of modules) hash.update(m.name).update(m.data);
  const key = hash.digest('hex').slice(0, 16);
  const image = join(vmCacheDir, `initramfs-${kernel.version}-${key}.cpio`);
  if (existsSync(image)) return image;

  const entries: CpioEntry[] = [
    ...['bin', 'sbin', 'dev', 'proc', 'sys', 'lower', 'upper', 'newroot', 'modules'].map((path): CpioEntry => ({ kind: 'dir', path })),
    // The kernel opens /dev/console for init's stdio before init can mount devtmpfs.
    { kind: 'char', path: 'dev/console', major: 5, minor: 1 },
    { kind: 'file', path: 'bin/busybox', data: busybox, mode: 0o755 },
    { kind: 'file', path: 'init', data: Buffer.from(GUEST_INIT), mode: 0o755 },
    { kind: 'file', path: 'sbin/chroot-modprobe', data: Buffer.from(GUEST_MODPROBE), mode: 0o755 },
    ...modules.map((m): CpioEntry => ({ kind: 'file', path: `modules/${m.name}`, data: m.data })),
  ];
  mkdirSync(vmCacheDir, { recursive: true });
  // Write then rename, so two test processes building at once never read half an image.
  const tmp = `${image}.${process.pid}.tmp`;
  writeFileSync(tmp, cpioNewc(entries));
  renameSync(tmp, image);
  pruneOldImages(image);
  return image;
}

/** Images of other keys are left by kernel or init changes; drop them after a day (another process may still be booting one). */
function pruneOldImages(keep: string): void {
  const dayAgo = Date.now() - 86_400_000;
  for (const f of readdirSync(vmCacheDir)) {
    const path = join(vmCacheDir, f);
    if (!f.startsWith('initramfs-') || path === keep) continue;
    try {
      if (statSync(path).mtimeMs < dayAgo) rmSync(path, { force: true });
    } catch {
      // Removed by a concurrent prune: nothing to do.
    }
  }
}
