import { luksError } from './errors.js';
import { cryptTargetVersion, deviceBehindSymlink, holderCount, pointSymlink } from './mapping/host.js';
import type { DeviceIdentity } from './device/identity.js';
import { dmState } from './mapping/sysfs-state.js';
import { exec } from './commands/exec.js';
import { keyslotOperations } from './keyslots/operations.js';
import { keyslotKdfs } from './keyslots/kdf.js';
import type { DriverOptions, KeyslotKdf, LuksDump } from './options.js';
import type { MappingStatus } from './mapping/status.js';
import { describeMapping, listMappings } from './mapping/cryptsetup-status.js';
import { assertNotCryptMapping, deviceHolders } from './device/use.js';
import { disksWithToken } from './header/search.js';
import { eraseKeyslots, formatDevice } from './header/format.js';
import { openMapping, perfFlagProbe } from './mapping/open.js';
import { driverContext } from './driver-context.js';
import { MAPPING_NAME_PATTERN } from './names.js';
import type { LuksDriver } from './luks-driver.js';

export type { MappingStatus } from './mapping/status.js';
export type { DeviceIdentity } from './device/identity.js';
export type { DeviceOps } from './device/ops.js';
export { DEFAULT_PBKDF } from './options.js';
export { keyslotKdfs } from './keyslots/kdf.js';
export type { DiskToken } from './header/token.js';
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
  const { ops, ctx, locks, checkName, status, headerOf, dumpOf, resolveDevice } = dc;
  const supportsPerfFlags = perfFlagProbe(ctx);
  const slotOps = keyslotOperations(dc);

  /** `cryptsetup status`: what sysfs does not say (cipher, key size, in use), for the admin views. */
  const describe = (name: string): Promise<MappingStatus | undefined> => (checkName(name), describeMapping(ctx, name, status));

  async function uuid(device: string | DeviceIdentity): Promise<string> {
    const { path } = await resolveDevice(device);
    return (await dc.luksUuidOf(path, 'luks')) ?? '';
  }

  return {
    status,
    describe,
    /** Whether the device starts with a LUKS header. A read error is never a "no": os-brick formats when isLuks fails for any reason, destroying data. */
    isLuks: async (device) => (await headerOf((await resolveDevice(device)).path)) !== undefined,
    identify: (device) => resolveDevice(device),
    async pinBacking(device) {
      const pinned = await resolveDevice(device);
      // Mapping over a cleartext device would stack encryption on another tenant's data, or on our own volume.
      await assertNotCryptMapping(ops, pinned);
      return pinned;
    },
    uuid,
    dump: async (device): Promise<LuksDump> => dumpOf((await resolveDevice(device)).path),
    keyslots: async (device): Promise<KeyslotKdf[]> => keyslotKdfs(await dumpOf((await resolveDevice(device)).path)),
    header: (pinned) => headerOf(pinned.path),
    holdersOf: (pinned) => deviceHolders(ops, pinned),
    disksWithToken: (match) => disksWithToken(ops, match),

    format: (device, key, opts) => formatDevice(dc, device, key, opts),
    open: (device, name, key, opts) => openMapping(dc, supportsPerfFlags, device, name, key, opts),

    /**
     * Closing an absent mapping is success: detach must be idempotent, and
     * "already gone" is the goal. cryptsetup itself refuses a mapping in use
     * (exit 5, E_DEVICE_BUSY), so no holder count is asked first. `pending`:
     * a deferred close left the mapping to the kernel until its last holder goes.
     */
    async close(name, opts = {}) {
      checkName(name);
      return locks.with([`map:${name}`], async () => {
        const argv = ['cryptsetup', 'close', ...(opts.deferred === true ? ['--deferred'] : []), name];
        const result = await exec(ctx, argv, { ok: [4], what: `close ${name}` });
        const pending = result.code === 0 && opts.deferred === true && (await dmState(ops, name)).kind === 'live';
        return { closed: result.code === 0, pending };
      });
    },

    async resize(name, key) {
      checkName(name);
      await locks.with([`map:${name}`], () => dc.withKey(key, (stdin) => exec(ctx, ['cryptsetup', 'resize', '--key-file=-', name], { stdin, what: `resize ${name}` })));
    },

    upgradeKeyslot: slotOps.upgradeKeyslot,
    verifyKey: slotOps.verifyKey,
    eraseKeyslots: (pinned, expect) => eraseKeyslots(dc, pinned, expect),

    async version() {
      const out = (await exec(ctx, ['cryptsetup', '--version'], { what: 'read the cryptsetup version' })).stdout.toString('utf8');
      const match = /cryptsetup (\d+)\.(\d+)\.(\d+)/.exec(out);
      if (!match) throw luksError('E_CRYPTSETUP_FAILED', `Cannot parse cryptsetup --version output: ${out.trim().slice(0, 100)}`);
      return { version: `${match[1]}.${match[2]}.${match[3]}`, major: Number(match[1]), minor: Number(match[2]), patch: Number(match[3]) };
    },
    holders: (name) => (checkName(name), holderCount(ctx, name)),
    cryptTarget: () => cryptTargetVersion(ctx),
    deviceBehindSymlink: async (name, link) => deviceBehindSymlink(ops, await status(name), link),
    pointSymlink: (link, name) => (checkName(name), pointSymlink(ops, link, name)),
    list: () => listMappings(ctx, (name) => MAPPING_NAME_PATTERN.test(name), describe),
  };
}
