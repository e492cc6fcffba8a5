/**
 * The host the socket API fuzz runs against: real loop devices (each holding
 * an ext4 file system, so that no provider may format, open or map it), odd
 * entries under /dev (files, directories, a fifo, symlinks out of /dev, into
 * loops, dangling), and a fingerprint of everything a request could change.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface DeviceWorld {
  /** Loop devices made for this run, e.g. /dev/loop3. */
  loops: string[];
  /** Their backing files. */
  backing: string[];
  /** Paths under /dev that are not block devices, or lead elsewhere through symlinks. */
  oddDevices: string[];
  /** The directory of those under /dev, removed at the end. */
  devDir: string;
  /** Fingerprint of devices, files and links: equal before and after, or something changed. */
  fingerprint(): string;
  cleanup(): void;
}

const run = (cmd: string, args: string[]): string => execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();

export function makeDeviceWorld(dir: string, count = 2): DeviceWorld {
  const loops: string[] = [];
  const backing: string[] = [];
  const devDir = mkdtempSync('/dev/portcullis-fuzz-');
  const cleanup = (): void => {
    for (const loop of loops) {
      try {
        run('losetup', ['-d', loop]);
      } catch {
        // Already gone; nothing to undo.
      }
    }
    rmSync(devDir, { recursive: true, force: true });
  };
  try {
    for (let i = 0; i < count; i += 1) {
      const file = join(dir, `disk${i}.img`);
      writeFileSync(file, Buffer.alloc(4 << 20));
      run('mkfs.ext4', ['-q', '-F', '-L', `fuzz${i}`, file]);
      backing.push(file);
      loops.push(run('losetup', ['-f', '--show', file]));
    }
    writeFileSync(join(devDir, 'file'), 'a regular file under /dev\n');
    mkdirSync(join(devDir, 'dir'));
    run('mkfifo', [join(devDir, 'fifo')]);
    const links: Array<[string, string]> = [
      ['to-passwd', '/etc/passwd'],
      ['to-null', '/dev/null'],
      ['to-dir', join(devDir, 'dir')],
      ['to-backing', backing[0] ?? '/nonexistent'],
      ['dangling', join(devDir, 'nothing-here')],
      ['loop-self', join(devDir, 'loop-self')],
      ['chain', join(devDir, 'to-passwd')],
      ['to-fifo', join(devDir, 'fifo')],
      ['to-proc', '/proc/self/fd/0'],
    ];
    for (const [name, target] of links) symlinkSync(target, join(devDir, name));
  } catch (err) {
    cleanup();
    throw err;
  }
  const oddDevices = [
    ...['file', 'dir', 'fifo', 'to-passwd', 'to-null', 'to-dir', 'to-backing', 'dangling', 'loop-self', 'chain', 'to-fifo', 'to-proc', 'nothing-here', 'dir/.', 'file/x'].map((n) => join(devDir, n)),
    '/dev/null', '/dev/zero', '/dev/full', '/dev/urandom', '/dev/tty', '/dev/loop-control', '/dev/stdin', '/dev/fd/0', '/dev/shm', '/dev/.', '/dev/./null', '/dev//null', '/dev/portcullis-none', '/dev/mapper/control',
  ];

  function fingerprint(): string {
    const hash = createHash('sha256');
    for (const file of [...backing, '/etc/passwd', join(devDir, 'file')]) hash.update(`${file}:`).update(readFileSync(file));
    for (const entry of readdirSync(devDir).sort()) {
      const path = join(devDir, entry);
      const st = lstatSync(path);
      hash.update(`${entry}:${st.mode}:${st.isSymbolicLink() ? readlinkSync(path) : ''}`);
    }
    // Each loop still on its backing file, same size, same flags; and the mappings the kernel has (none may appear).
    for (const loop of loops) hash.update(run('losetup', ['-l', '-n', '-O', 'NAME,BACK-FILE,SIZELIMIT,OFFSET,RO', loop]));
    hash.update(existsSync('/dev/mapper') ? readdirSync('/dev/mapper').sort().join(',') : '');
    return hash.digest('hex');
  }
  return { loops, backing, oddDevices, devDir, fingerprint, cleanup };
}
