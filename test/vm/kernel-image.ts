import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Kernel } from './initramfs.js';
import { vmCacheDir } from './initramfs.js';

/**
 * The image qemu boots. Under TCG, a compressed bzImage spends ~3-4 s in
 * firmware and self-decompression before the kernel's clock starts; the same
 * kernel unpacked to its ELF vmlinux boots through its PVH entry point in
 * under a second (measured: script start 7.9-10 s after qemu's start with the
 * bzImage, 5.7-6.1 s with vmlinux). So unpack once per kernel into the cache,
 * and fall back to the bzImage whenever that is not possible.
 */
export function bootImage(kernel: Kernel): string {
  try {
    return unpackedVmlinux(kernel) ?? kernel.image;
  } catch {
    // Any surprise in the unpacking only costs boot time, ignoring.
    return kernel.image;
  }
}

const MAGICS: ReadonlyArray<{ config: string; magic: Buffer; argv: string[] }> = [
  { config: 'CONFIG_KERNEL_XZ', magic: Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]), argv: ['xz', '-dc', '--single-stream'] },
  { config: 'CONFIG_KERNEL_ZSTD', magic: Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), argv: ['zstd', '-dcq'] },
  { config: 'CONFIG_KERNEL_GZIP', magic: Buffer.from([0x1f, 0x8b, 0x08]), argv: ['gzip', '-dcq'] },
];

function unpackedVmlinux(kernel: Kernel): string | undefined {
  const config = readFileSync(`/boot/config-${kernel.version}`, 'utf8');
  if (!/^CONFIG_PVH=y$/m.test(config)) return undefined;
  const st = statSync(kernel.image);
  const path = join(vmCacheDir, `vmlinux-${kernel.version}-${st.size}-${Math.floor(st.mtimeMs)}.elf`);
  if (existsSync(path)) return path;
  const method = MAGICS.find((m) => new RegExp(`^${m.config}=y$`, 'm').test(config));
  if (method === undefined) return undefined;
  const bz = readFileSync(kernel.image);
  const offset = bz.indexOf(method.magic);
  if (offset < 0) return undefined;
  const [tool, ...args] = method.argv as [string, ...string[]];
  // Trailing bytes after the stream make some tools exit non-zero; the ELF check below decides.
  const r = spawnSync(tool, args, { input: bz.subarray(offset), maxBuffer: 512 * 1024 * 1024 });
  if (!(r.stdout instanceof Buffer) || !completeElf(r.stdout)) return undefined;
  mkdirSync(vmCacheDir, { recursive: true });
  for (const f of readdirSync(vmCacheDir)) {
    if (f.startsWith(`vmlinux-${kernel.version}-`)) rmSync(join(vmCacheDir, f), { force: true });
  }
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, r.stdout);
  renameSync(tmp, path);
  return path;
}

/** A 64-bit ELF whose section header table lies within the bytes: not cut short. */
function completeElf(b: Buffer): boolean {
  if (b.length < 64 || b.readUInt32BE(0) !== 0x7f454c46 || b[4] !== 2) return false;
  const shoff = Number(b.readBigUInt64LE(0x28));
  const shentsize = b.readUInt16LE(0x3a);
  const shnum = b.readUInt16LE(0x3c);
  return shoff + shentsize * shnum <= b.length;
}
