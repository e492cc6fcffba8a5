import { luksError } from '../errors.js';
import type { DeviceOps } from './ops.js';

export { formatRdev } from './ops.js';

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

/**
 * realpath and stat through the device operations: in-process on the host,
 * in the guest agent in the VM; never a process.
 * @throws E_DEVICE_NOT_FOUND when nothing is there or it is not a block device
 */
export async function identifyDevice(ops: DeviceOps, device: string): Promise<DeviceIdentity> {
  const st = await ops.stat(device).catch((err: unknown) => {
    throw luksError('E_DEVICE_NOT_FOUND', `Cannot stat ${device} (${(err as NodeJS.ErrnoException).code ?? String(err)})`, { cause: err, details: { device } });
  });
  if (st === undefined) throw luksError('E_DEVICE_NOT_FOUND', `Device ${device} does not exist`, { details: { device } });
  if (!st.block || st.rdev === null) throw luksError('E_DEVICE_NOT_FOUND', `${device} (${st.path}) is not a block device`, { details: { device } });
  return { path: st.path, rdev: st.rdev };
}

/** The major:minor at a path now, or undefined when nothing (or no block device) is there. */
export async function rdevAt(ops: DeviceOps, path: string): Promise<string | undefined> {
  const st = await ops.stat(path).catch(() => undefined);
  return st?.block === true && st.rdev !== null ? st.rdev : undefined;
}
