import type { DeviceOps } from '../device/ops.js';
import { identifyDevice, type DeviceIdentity } from '../device/identity.js';
import type { DiskToken } from './token.js';
import { readLuksHeader, type LuksHeader } from './read.js';

/**
 * Finds the disks whose LUKS2 header carries a portcullis token that
 * `match` accepts: how an erase finds an ephemeral disk whose record is gone
 * (a lost file, a crash, records from before a reboot whose device names
 * moved). Rare, so a scan: every block device the kernel lists, minus the
 * cleartext side of crypt mappings and empty devices, one header read each
 * (in-process, bounded by the device-read slots). A device that cannot be
 * read is skipped, never guessed about.
 */
export async function disksWithToken(ops: DeviceOps, match: (token: DiskToken) => boolean): Promise<Array<{ pinned: DeviceIdentity; header: LuksHeader }>> {
  const names = (await ops.list('/sys/class/block')) ?? [];
  const facts = await ops.readFiles(names.flatMap((n) => [`/sys/class/block/${n}/size`, `/sys/class/block/${n}/dm/uuid`]));
  const candidates = names.filter((_, i) => Number(facts[2 * i] ?? '0') > 0 && !(facts[2 * i + 1] ?? '').startsWith('CRYPT-'));
  const found: Array<{ pinned: DeviceIdentity; header: LuksHeader }> = [];
  for (const name of candidates) {
    try {
      const pinned = await identifyDevice(ops, `/dev/${name}`);
      const header = await readLuksHeader(ops, pinned.path);
      if (header?.token !== undefined && match(header.token)) found.push({ pinned, header });
    } catch {
      // Unreadable or gone since the listing: not a disk this search can prove.
    }
  }
  return found;
}
