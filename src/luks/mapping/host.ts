import { exec, type ExecContext } from '../commands/exec.js';
import type { DeviceOps } from '../device/ops.js';
import type { MappingStatus } from './status.js';

/**
 * What the driver asks of the host about a mapping beyond cryptsetup: its
 * holders, the device-mapper's crypt target, and os-brick's attachment
 * symlink. Here, so that only src/luks touches devices and mappings.
 */

/**
 * os-brick replaces the attachment's symlink with one to the mapping. A
 * second attach then finds the link pointing at our mapping already: the
 * real device is the mapping's backing device.
 */
export async function deviceBehindSymlink(ops: DeviceOps, status: MappingStatus | undefined, link: string): Promise<string> {
  if (status?.device === undefined) return link;
  // Both resolved the same way (/dev/mapper/X may itself be a link to /dev/dm-N): only our own mapping counts.
  const [linkTarget, mappingTarget] = await Promise.all([ops.stat(link), ops.stat(status.mapperPath)]);
  return linkTarget !== undefined && linkTarget.path === mappingTarget?.path ? status.device : link;
}

/**
 * Points os-brick's attachment symlink at the mapping.
 * @returns why it did not, or undefined when it did
 */
export function pointSymlink(ops: DeviceOps, link: string, name: string): Promise<string | undefined> {
  // Only ever a symlink: replacing a device node would destroy the node itself.
  return ops.replaceSymlink(link, `/dev/mapper/${name}`);
}

/**
 * A dm device of this name that exists without a live table, or undefined
 * (no such device, or one with a table). Asked of dmsetup, not sysfs: the
 * kernel registers a dm device's disk only once a table is loaded, so such a
 * device is not under /sys/block. Only on the error path (an open that found
 * the name taken).
 */
export async function tablelessDevice(ctx: ExecContext, name: string): Promise<{ uuid: string } | undefined> {
  const info = await exec(ctx, ['dmsetup', 'info', '-c', '--noheadings', '--separator', '|', '-o', 'attr,uuid', name], { ok: [1], what: `inspect ${name}` });
  if (info.code !== 0) return undefined;
  const [attr = '', uuid = ''] = info.stdout.toString('utf8').trim().split('|');
  // attr's first letter is L while a live table is loaded.
  return attr.startsWith('L') ? undefined : { uuid };
}
