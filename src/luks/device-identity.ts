import { realpath, stat } from 'node:fs/promises';
import { luksError } from './errors.js';
import { exec, type ExecContext } from './exec.js';

/**
 * A block device is its major:minor (st_rdev), not a path: /dev/mapper/x and
 * /dev/dm-3, or a by-id link and /dev/sdb, are one device; and a path can be
 * taken over by another device on hot-plug. Requests pin the identity once
 * and check it again right before anything is written.
 */
export interface DeviceIdentity {
  /** The device node's real path (symlinks resolved). */
  path: string;
  /** "major:minor", decimal. */
  rdev: string;
}

/** How the driver learns a device's identity: in-process on the host, or through the runner where the device lives elsewhere (the test VM). */
export interface DeviceIdentifier {
  /**
   * @throws E_DEVICE_NOT_FOUND when nothing is there or it is not a block device
   */
  identify(device: string): Promise<DeviceIdentity>;
  /** The major:minor at a real path now, or undefined when nothing (or no block device) is there. */
  rdevAt(path: string): Promise<string | undefined>;
}

const notFound = (device: string) => luksError('E_DEVICE_NOT_FOUND', `Device ${device} does not exist`, { details: { device } });
const notBlock = (device: string, path: string) => luksError('E_DEVICE_NOT_FOUND', `${device} (${path}) is not a block device`, { details: { device } });

/** Linux's dev_t encoding (glibc's gnu_dev_major/minor): 12 bits of major, 20 of minor, split. */
export function formatRdev(rdev: bigint): string {
  const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn);
  const minor = (rdev & 0xffn) | ((rdev >> 12n) & ~0xffn);
  return `${major}:${minor}`;
}

/** In-process: realpath and stat, no process spawned. For a driver whose commands run on this host. */
export function localIdentifier(): DeviceIdentifier {
  return {
    async identify(device) {
      let path: string;
      try {
        path = await realpath(device);
      } catch {
        throw notFound(device);
      }
      const st = await stat(path, { bigint: true }).catch(() => {
        throw notFound(device);
      });
      if (!st.isBlockDevice()) throw notBlock(device, path);
      return { path, rdev: formatRdev(st.rdev) };
    },
    async rdevAt(path) {
      const st = await stat(path, { bigint: true }).catch(() => undefined);
      return st?.isBlockDevice() === true ? formatRdev(st.rdev) : undefined;
    },
  };
}

/** Through the runner, where the device lives (the test VM's kernel): readlink and stat, two processes. */
export function runnerIdentifier(ctx: ExecContext): DeviceIdentifier {
  /** stat(1) of a real path: its type and major:minor, or undefined when it cannot. */
  const statAt = async (path: string): Promise<{ block: boolean; rdev: string } | undefined> => {
    // %t:%T is major:minor in hex; %F the file type.
    const st = await exec(ctx, ['stat', '-c', '%t:%T|%F', path], { ok: [1], what: `stat ${path}` });
    if (st.code !== 0) return undefined;
    const [numbers = '', type = ''] = st.stdout.toString('utf8').trim().split('|');
    const [major = 'x', minor = 'x'] = numbers.split(':');
    return { block: type === 'block special file', rdev: `${Number.parseInt(major, 16)}:${Number.parseInt(minor, 16)}` };
  };
  return {
    async identify(device) {
      const resolved = await exec(ctx, ['readlink', '-e', device], { ok: [1], what: `resolve ${device}` });
      const path = resolved.stdout.toString('utf8').trim();
      if (resolved.code !== 0 || path === '') throw notFound(device);
      const st = await statAt(path);
      if (st === undefined) throw notFound(device);
      if (!st.block) throw notBlock(device, path);
      return { path, rdev: st.rdev };
    },
    async rdevAt(path) {
      const st = await statAt(path);
      return st?.block === true ? st.rdev : undefined;
    },
  };
}
