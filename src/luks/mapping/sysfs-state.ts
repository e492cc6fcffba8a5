import type { DeviceOps } from '../device/ops.js';
import type { MappingStatus } from './status.js';

/**
 * A device-mapper device's state from sysfs, no process spawned: what the
 * attach and detach paths asked `cryptsetup status` and `dmsetup info` for.
 * /sys/block/dm-N/dm/{name,uuid,suspended}, size, ro and slaves/ are the
 * kernel's own answers; cryptsetup's dm UUID says the type
 * (CRYPT-LUKS2-<uuid>-<name>, CRYPT-LUKS1-..., CRYPT-PLAIN-<name>).
 * What sysfs does not carry (cipher, key size, open count) still comes from
 * cryptsetup, on the admin paths only.
 */
export type DmState =
  | { kind: 'absent' }
  /** A dm device of the name without a live table (one whose table was cleared; a never-loaded one is not in sysfs at all). */
  | { kind: 'tableless'; uuid: string }
  | { kind: 'live'; status: MappingStatus; uuid: string };

const SYS_BLOCK = '/sys/block';

/** Finds the dm device named `name` among /sys/block/dm-*: two round trips however many there are. */
export async function dmState(ops: DeviceOps, name: string): Promise<DmState> {
  const found = await findDm(ops, name);
  if (found === undefined) return { kind: 'absent' };
  const base = `${SYS_BLOCK}/${found}`;
  const [uuid = '', suspended, size, ro] = await ops.readFiles([`${base}/dm/uuid`, `${base}/dm/suspended`, `${base}/size`, `${base}/ro`]);
  const slaves = (await ops.list(`${base}/slaves`)) ?? [];
  const sectors = Number(size ?? '0');
  if (sectors === 0 && slaves.length === 0) return { kind: 'tableless', uuid };
  const status: MappingStatus = { name, mapperPath: `/dev/mapper/${name}`, readOnly: ro === '1', inUse: false, flags: [], sizeSectors: sectors, suspended: suspended === '1' };
  const type = typeFromUuid(uuid);
  if (type !== undefined) status.type = type;
  // dm-crypt has exactly one backing device; a stacked target with several is not ours to describe.
  if (slaves.length === 1 && slaves[0] !== undefined) {
    const [rdev] = await ops.readFiles([`${base}/slaves/${slaves[0]}/dev`]);
    status.device = `/dev/${slaves[0]}`;
    if (rdev !== undefined) status.deviceRdev = rdev;
  }
  return { kind: 'live', status, uuid };
}

/** The kernel names of every dm device and their dm names, in one batch. */
async function findDm(ops: DeviceOps, name: string): Promise<string | undefined> {
  const dms = ((await ops.list(SYS_BLOCK)) ?? []).filter((d) => d.startsWith('dm-'));
  if (dms.length === 0) return undefined;
  const names = await ops.readFiles(dms.map((d) => `${SYS_BLOCK}/${d}/dm/name`));
  const at = names.indexOf(name);
  return at === -1 ? undefined : dms[at];
}

/** cryptsetup's type word (LUKS1, LUKS2, PLAIN, ...) from its dm UUID; undefined for a device cryptsetup did not make. */
export function typeFromUuid(uuid: string): string | undefined {
  const match = /^CRYPT-([A-Z0-9]+)-/.exec(uuid);
  return match?.[1];
}
