import { luksError } from '../errors.js';
import type { DeviceOps } from './ops.js';
import type { DeviceIdentity } from './identity.js';

/**
 * What the kernel says is using a block device, from sysfs (no process):
 * whether it is itself a dm-crypt mapping, and what holds it.
 */

const sysDev = (pinned: DeviceIdentity): string => `/sys/dev/block/${pinned.rdev}`;

/**
 * A device cryptsetup made (its dm UUID starts with CRYPT-) is cleartext of
 * some volume; it is never a backing device.
 * @throws E_DEVICE_IS_MAPPING
 */
export async function assertNotCryptMapping(ops: DeviceOps, pinned: DeviceIdentity): Promise<void> {
  const [uuid, name] = await ops.readFiles([`${sysDev(pinned)}/dm/uuid`, `${sysDev(pinned)}/dm/name`]);
  if (uuid === undefined || !uuid.startsWith('CRYPT-')) return;
  throw luksError('E_DEVICE_IS_MAPPING', `${pinned.path} is the dm-crypt mapping ${name ?? '?'} (cleartext of another volume), not a backing device; refusing to map over it. Name the volume's real device`, {
    details: { device: pinned.path, mapping: name ?? null },
  });
}

/** The kernel names of the device's holders (dm-3, md0): empty when nothing holds it. */
export async function deviceHolders(ops: DeviceOps, pinned: DeviceIdentity): Promise<string[]> {
  return (await ops.list(`${sysDev(pinned)}/holders`)) ?? [];
}
