import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { VmError } from './errors.js';
import { ensureInitramfs, findKernel, vmCacheDir, type Kernel } from './initramfs.js';
import { bootImage } from './kernel-image.js';
import { ensureVmPackages } from './packages.js';

/** Sizes from the verified recipe; 2 GiB leaves room for /scratch backing files. */
export interface MachineOptions {
  /** @default 2048 */
  memoryMiB?: number;
  /** @default 2 */
  cpus?: number;
  /** Receives the serial console's text as it arrives (debugging: PORTCULLIS_VM_CONSOLE=1). */
  onConsole?: (text: string) => void;
  /** Progress lines (package installs). */
  log?: (line: string) => void;
}

export interface Prepared {
  kernel: Kernel;
  /** What -kernel gets: the unpacked vmlinux when possible, else the bzImage. */
  image: string;
  initramfs: string;
}

/** Installs what is missing, finds the kernel, builds or reuses the initramfs. */
export function prepareBoot(log: (line: string) => void = () => {}, extraModules: readonly string[] = []): Prepared {
  ensureVmPackages(log);
  const kernel = findKernel();
  return { kernel, image: bootImage(kernel), initramfs: ensureInitramfs(kernel, extraModules) };
}

/** Quotes one word for /bin/sh. */
export const shQuote = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

let scriptCount = 0;
/**
 * Writes the script the guest init runs, under .cache/vm/run on the host; the
 * guest reads it through the 9p root. Returns its path.
 */
export function writeGuestScript(body: string): string {
  const dir = join(vmCacheDir, 'run');
  // The path travels on the kernel command line, which splits at whitespace.
  if (/\s/.test(dir)) throw new VmError('E_VM_BOOT', `The checkout path ${JSON.stringify(dir)} contains whitespace; the VM harness cannot pass it to the guest`);
  mkdirSync(dir, { recursive: true });
  const path = join(dir, `${process.pid}-${++scriptCount}.sh`);
  writeFileSync(path, `#!/bin/sh\n${body}`, { mode: 0o755 });
  return path;
}

/** Keeps the last bytes of the console for error messages. */
export class ConsoleTail {
  private text = '';
  constructor(private readonly limit = 8192) {}
  push(chunk: string): void {
    this.text = (this.text + chunk).slice(-this.limit);
  }
  toString(): string {
    // Serial output carries CRLF and the firmware's escape sequences.
    return this.text.replace(/\r/g, '').replace(/\x1b\[[0-9;?]*[a-zA-Z]|\x1bc/g, '').trim();
  }
}

/**
 * Starts qemu on `prepared` with the run script. TCG only: nested KVM hangs on
 * these machines. No network device at all (-nic none). When the parent dies,
 * setpriv's pdeathsig kills qemu, so a crashed test leaves no VM behind.
 */
export function spawnQemu(prepared: Prepared, script: string, extraArgs: readonly string[], options: MachineOptions = {}, extraAppend = ''): ChildProcess {
  const qemuArgs = [
    '-accel', 'tcg,thread=multi',
    '-cpu', 'max',
    '-m', String(options.memoryMiB ?? 2048),
    '-smp', String(options.cpus ?? 2),
    '-nographic', '-no-reboot', '-nic', 'none',
    '-kernel', prepared.image,
    '-initrd', prepared.initramfs,
    // panic=-1: a guest kernel panic reboots at once, and -no-reboot turns that into qemu exiting.
    '-append', `console=ttyS0 quiet loglevel=3 panic=-1 portcullis.script=${script}${extraAppend === '' ? '' : ` ${extraAppend}`}`,
    '-virtfs', 'local,path=/,mount_tag=hostroot,security_model=passthrough,readonly=on,multidevs=remap',
    ...extraArgs,
  ];
  const setpriv = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p));
  const [cmd, args] = setpriv === undefined
    ? ['qemu-system-x86_64', qemuArgs]
    : [setpriv, ['--pdeathsig', 'KILL', '--', 'qemu-system-x86_64', ...qemuArgs]];
  return spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
}
