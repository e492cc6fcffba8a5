import { luksError } from './errors.js';
import { deviceBehindSymlink, pointSymlink } from './mapping/host.js';
import type { DeviceIdentity } from './device/identity.js';
import { dmState } from './mapping/sysfs-state.js';
import { keyslotOperations } from './keyslots/operations.js';
import { keyslotKdfs } from './keyslots/kdf.js';
import { keyslotRotation } from './keyslots/rotation.js';
import type { DriverOptions, KeyslotKdf, LuksDump } from './options.js';
import type { MappingStatus } from './mapping/status.js';
import { assertNotCryptMapping, deviceHolders } from './device/use.js';
import { disksWithToken } from './header/search.js';
import { eraseKeyslots, formatDevice } from './header/format.js';
import { openMapping } from './mapping/open.js';
import { driverContext } from './driver-context.js';
import { MAPPING_NAME_PATTERN } from './names.js';
import type { LuksDriver } from './luks-driver.js';

export type { MappingStatus } from './mapping/status.js';
export type { DeviceIdentity } from './device/identity.js';
export type { DeviceOps } from './device/ops.js';
export { DEFAULT_PBKDF } from './options.js';
export { keyslotKdfs } from './keyslots/kdf.js';
export type { DiskToken } from './header/token.js';
export type { SlotKey, VolumeToken } from './header/volume-token.js';
export { tokenKeyIds } from './header/volume-token.js';
export type { LuksHeader } from './header/read.js';
export type { DriverOptions, FormatOptions, KeyslotKdf, KeyslotUpgrade, LuksDump, OpenOptions, OpenResult, Pbkdf } from './options.js';
export type { LuksDriver } from './luks-driver.js';

/**
 * cryptsetup for what only it can do (format, open, close, resize, erase),
 * and the device operations for every question the kernel answers directly
 * (identity, LUKS header, mapping state): a cached re-attach spawns one
 * process. The key always goes to cryptsetup on stdin with --key-file=-;
 * never argv, environment, logs or temp files. One lock per device and per
 * mapping name. The parts live by concept: device/ (identity, blank, use),
 * header/ (read, format and erase, token), keyslots/, mapping/ (sysfs state,
 * open, cryptsetup status), commands/.
 */
export function createLuksDriver(options: DriverOptions): LuksDriver {
  const dc = driverContext(options);
  const { ops, crypt, locks, checkName, status, headerOf, dumpOf, resolveDevice } = dc;
  const slotOps = keyslotOperations(dc);
  const rotation = keyslotRotation(dc);

  /** What sysfs does not say (cipher, key size, in use), for the admin views. */
  const describe = (name: string): Promise<MappingStatus | undefined> => (checkName(name), crypt.describe(name));

  async function uuid(device: string | DeviceIdentity): Promise<string> {
    return (await dc.luksUuidOf(await resolveDevice(device), 'luks')) ?? '';
  }

  return {
    status,
    describe,
    /** Whether the device starts with a LUKS header. A read error is never a "no": os-brick formats when isLuks fails for any reason, destroying data. */
    isLuks: async (device) => (await headerOf(await resolveDevice(device))) !== undefined,
    identify: (device) => resolveDevice(device),
    async pinBacking(device) {
      const pinned = await resolveDevice(device);
      // Mapping over a cleartext device would stack encryption on another tenant's data, or on our own volume.
      await assertNotCryptMapping(ops, pinned);
      return pinned;
    },
    uuid,
    dump: async (device): Promise<LuksDump> => dumpOf(await resolveDevice(device)),
    keyslots: async (device): Promise<KeyslotKdf[]> => keyslotKdfs(await dumpOf(await resolveDevice(device))),
    header: (pinned) => headerOf(pinned),
    holdersOf: (pinned) => deviceHolders(ops, pinned),
    disksWithToken: (match) => disksWithToken(ops, match),

    format: (device, key, opts) => formatDevice(dc, device, key, opts),
    open: (device, name, key, opts) => openMapping(dc, device, name, key, opts),

    /**
     * Closing an absent mapping is success: detach must be idempotent, and
     * "already gone" is the goal. cryptsetup itself refuses a mapping in use
     * (exit 5, E_DEVICE_BUSY), so no holder count is asked first. `pending`:
     * a deferred close left the mapping to the kernel until its last holder goes.
     */
    async close(name, opts = {}) {
      checkName(name);
      return locks.with([`map:${name}`], async () => {
        const closed = await crypt.close(name, opts.deferred === true);
        const pending = closed && opts.deferred === true && (await dmState(ops, name)).kind === 'live';
        return { closed, pending };
      });
    },

    async resize(name, key) {
      checkName(name);
      await locks.with([`map:${name}`], () => dc.withKey(key, (passphrase) => crypt.resize(name, passphrase)));
    },

    upgradeKeyslot: slotOps.upgradeKeyslot,
    verifyKey: slotOps.verifyKey,
    eraseKeyslots: (pinned, expect) => eraseKeyslots(dc, pinned, expect),
    slotOpenedBy: rotation.slotOpenedBy,
    addSlot: rotation.addSlot,
    removeSlot: rotation.removeSlot,
    writeVolumeToken: rotation.writeToken,

    version: () => crypt.version(),
    holders: (name) => (checkName(name), crypt.openCount(name)),
    cryptTarget: () => crypt.cryptTarget(),
    deviceBehindSymlink: async (name, link) => deviceBehindSymlink(ops, await status(name), link),
    pointSymlink: (link, name) => (checkName(name), pointSymlink(ops, link, name)),
    list: async () => {
      const names = (await crypt.list()).filter((n) => MAPPING_NAME_PATTERN.test(n));
      const statuses = await Promise.all(names.map((n) => describe(n)));
      return statuses.filter((s): s is MappingStatus => s !== undefined);
    },
  };
}
