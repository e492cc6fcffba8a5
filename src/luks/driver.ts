import { assertBlank, describeSignature, probeSignature } from './device/blank.js';
import { luksError, LuksError } from './errors.js';
import { cryptTargetVersion, deviceBehindSymlink, holderCount, pointSymlink, removeHalfCreated } from './mapping/host.js';
import { identifyDevice, rdevAt, type DeviceIdentity } from './device/identity.js';
import { readLuksHeader, type LuksHeader } from './header/read.js';
import { dmState } from './mapping/sysfs-state.js';
import { exec, type ExecContext } from './commands/exec.js';
import { keyedLock } from '../util/keyed-lock.js';
import { checkKeyLength, hexPassphrase, mangledHexPassphrase } from './commands/passphrase.js';
import { keyslotOperations } from './keyslots/operations.js';
import { keyslotKdfs } from './keyslots/kdf.js';
import { DEFAULT_PBKDF, type DriverOptions, type FormatOptions, type KeyslotKdf, type LuksDump, type OpenOptions, type OpenResult } from './options.js';
import { providerDefinition } from './providers/index.js';
import { plainAllocator } from '../util/secure-memory.js';
import type { MappingStatus } from './mapping/status.js';
import { describeMapping, listMappings } from './mapping/cryptsetup-status.js';
import { diskTokenJson, type DiskToken } from './header/token.js';
import { assertNotCryptMapping, deviceHolders } from './device/use.js';
import { disksWithToken } from './header/search.js';
import type { LuksDriver } from './luks-driver.js';

export type { MappingStatus } from './mapping/status.js';
export type { DeviceIdentity } from './device/identity.js';
export type { DeviceOps } from './device/ops.js';
export { DEFAULT_PBKDF } from './options.js';
export { keyslotKdfs } from './keyslots/kdf.js';
export type { DiskToken } from './header/token.js';
export type { LuksHeader } from './header/read.js';
export type { DriverOptions, FormatOptions, KeyslotKdf, KeyslotUpgrade, LuksDump, OpenOptions, OpenResult, Pbkdf } from './options.js';

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.+-]{0,126}$/;
const DEVICE = /^\/dev\/[A-Za-z0-9_./:+@-]+$/;

export type { LuksDriver } from './luks-driver.js';

/**
 * cryptsetup for what only it can do (format, open, close, resize, erase),
 * and the device operations for every question the kernel answers directly
 * (identity, LUKS header, mapping state): a cached re-attach spawns one
 * process. The key always goes to cryptsetup on stdin with --key-file=-;
 * never argv, environment, logs or temp files. One lock per device and per
 * mapping name.
 */
export function createLuksDriver(options: DriverOptions): LuksDriver {
  const { ops } = options;
  const ctx: ExecContext = { runner: ops, timeoutMs: options.timeoutMs ?? 120_000 };
  const locks = keyedLock();
  const allocator = options.allocator ?? plainAllocator();
  let perfFlags: Promise<boolean> | undefined;

  const withKey = async <T>(key: Uint8Array, fn: (stdin: Buffer) => Promise<T>): Promise<T> => {
    checkKeyLength(key);
    const passphrase = allocator.alloc(key.length * 2);
    try {
      return await fn(hexPassphrase(key, passphrase.view()));
    } finally {
      passphrase.wipe();
    }
  };

  /**
   * The device's identity: its real path and major:minor where it lives. A
   * caller that pinned it already (once per request) passes the identity.
   */
  async function resolveDevice(device: string | DeviceIdentity): Promise<DeviceIdentity> {
    if (typeof device !== 'string') return device;
    if (!DEVICE.test(device) || device.includes('..')) {
      throw luksError('E_LUKS_INVALID_ARGUMENT', `Device path "${device}" is not a /dev path`, { details: { device } });
    }
    return identifyDevice(ops, device);
  }

  /**
   * Right before a write: the pinned path must still be the pinned device. A
   * node reused on hot-plug since the request pinned it is refused, not written.
   * @throws E_DEVICE_CHANGED
   */
  async function recheck(pinned: DeviceIdentity, doing: string): Promise<void> {
    const now = await rdevAt(ops, pinned.path);
    if (now === pinned.rdev) return;
    throw luksError('E_DEVICE_CHANGED', `${pinned.path} is no longer device ${pinned.rdev} (now ${now ?? 'nothing'}): it was replaced while this request ran; refusing to ${doing}`, {
      details: { device: pinned.path, pinned: pinned.rdev, now: now ?? null },
    });
  }

  /** Whether the kernel's name for a mapping's backing device is the pinned device (/dev/mapper/x and /dev/dm-3 are one). */
  async function sameDevice(existing: MappingStatus, pinned: DeviceIdentity): Promise<boolean> {
    if (existing.deviceRdev !== undefined) return existing.deviceRdev === pinned.rdev;
    if (existing.device === undefined) return false;
    if (existing.device === pinned.path) return true;
    return (await rdevAt(ops, existing.device)) === pinned.rdev;
  }

  function checkName(name: string): void {
    if (!NAME.test(name)) {
      throw luksError('E_LUKS_INVALID_ARGUMENT', `Mapping name "${name}" is invalid (1–127 of A-Z a-z 0-9 _ . + -, not starting with a symbol)`, { details: { name } });
    }
  }

  /** The mapping's state from sysfs, no process: undefined when absent or left without a table. */
  async function status(name: string): Promise<MappingStatus | undefined> {
    checkName(name);
    const state = await dmState(ops, name);
    return state.kind === 'live' ? state.status : undefined;
  }

  /** `cryptsetup status`: what sysfs does not say (cipher, key size, in use), for the admin views. */
  const describe = (name: string): Promise<MappingStatus | undefined> => (checkName(name), describeMapping(ctx, name, status));

  /** The LUKS header, read in-process. */
  const headerOf = (path: string): Promise<LuksHeader | undefined> => readLuksHeader(ops, path);

  async function dumpOf(path: string): Promise<LuksDump> {
    const header = await headerOf(path);
    if (header === undefined) throw luksError('E_DEVICE_WRONG', `Device ${path} holds no LUKS header`, { details: { device: path } });
    return header.dump;
  }

  /**
   * Whether the device starts with a LUKS header. A read error is never a
   * "no": os-brick formats when isLuks fails for any reason, destroying data.
   * @throws E_DEVICE_UNREADABLE, E_LUKS_HEADER
   */
  async function isLuks(device: string | DeviceIdentity): Promise<boolean> {
    const { path } = await resolveDevice(device);
    return (await headerOf(path)) !== undefined;
  }

  async function supportsPerfFlags(): Promise<boolean> {
    // cryptsetup ≥ 2.3.4 has the flags; the kernel needs dm-crypt ≥ 1.22 (Linux 5.9). Ask each once.
    perfFlags ??= (async () => {
      const help = await exec(ctx, ['cryptsetup', '--help'], { what: 'list cryptsetup options' });
      if (!help.stdout.toString('utf8').includes('perf-no_read_workqueue')) return false;
      const targets = await exec(ctx, ['dmsetup', 'targets'], { ok: [1], what: 'list device-mapper targets' });
      const crypt = /^crypt\s+v(\d+)\.(\d+)/m.exec(targets.stdout.toString('utf8'));
      return crypt !== null && (Number(crypt[1]) > 1 || Number(crypt[2]) >= 22);
    })();
    return perfFlags;
  }

  async function luksUuid(path: string): Promise<string> {
    const header = await headerOf(path);
    if (header === undefined) throw luksError('E_DEVICE_WRONG', `Device ${path} holds no LUKS header, so it has no LUKS UUID`, { details: { device: path } });
    return header.uuid;
  }

  const luksUuidOf = (path: string, type: OpenOptions['type']): Promise<string | null> => (type === 'plain' ? Promise.resolve(null) : luksUuid(path));

  const slotOps = keyslotOperations({ ctx, allocator, locks, resolveDevice, dumpOf, withKey });

  async function ensureNode(name: string): Promise<string> {
    const mapperPath = `/dev/mapper/${name}`;
    // Without udev, libdevmapper creates the node itself before cryptsetup returns; mknodes
    // repairs a missing one synchronously. No waiting, no polling.
    if ((await rdevAt(ops, mapperPath)) === undefined) await exec(ctx, ['dmsetup', 'mknodes', name], { what: `create ${mapperPath}` });
    return mapperPath;
  }

  return {
    status,
    describe,
    isLuks,

    async version(): Promise<{ version: string; major: number; minor: number; patch: number }> {
      const out = (await exec(ctx, ['cryptsetup', '--version'], { what: 'read the cryptsetup version' })).stdout.toString('utf8');
      const match = /cryptsetup (\d+)\.(\d+)\.(\d+)/.exec(out);
      if (!match) throw luksError('E_CRYPTSETUP_FAILED', `Cannot parse cryptsetup --version output: ${out.trim().slice(0, 100)}`);
      return { version: `${match[1]}.${match[2]}.${match[3]}`, major: Number(match[1]), minor: Number(match[2]), patch: Number(match[3]) };
    },

    /** Pins a device for a request: its real path and major:minor. */
    identify: (device: string): Promise<DeviceIdentity> => resolveDevice(device),

    /**
     * Pins the device an attach maps: as identify, and never a dm-crypt
     * mapping (ours or anyone's): mapping over a cleartext device would
     * stack encryption on another tenant's data, or on our own volume.
     * @throws E_DEVICE_IS_MAPPING
     */
    async pinBacking(device: string): Promise<DeviceIdentity> {
      const pinned = await resolveDevice(device);
      await assertNotCryptMapping(ops, pinned);
      return pinned;
    },

    async uuid(device: string | DeviceIdentity): Promise<string> {
      return luksUuid((await resolveDevice(device)).path);
    },

    async dump(device: string | DeviceIdentity): Promise<LuksDump> {
      return dumpOf((await resolveDevice(device)).path);
    },

    /** The PBKDF of every enabled keyslot. */
    async keyslots(device: string | DeviceIdentity): Promise<KeyslotKdf[]> {
      return keyslotKdfs(await dumpOf((await resolveDevice(device)).path));
    },

    /**
     * Formats only a blank device (see assertBlank): never one that holds
     * LUKS, any blkid signature, non-zero data in its first MiB, or that
     * cannot be read.
     */
    async format(device: string | DeviceIdentity, key: Uint8Array, opts: FormatOptions & { token?: DiskToken }): Promise<string> {
      const pinned = await resolveDevice(device);
      const { path } = pinned;
      return locks.with([`dev:${pinned.rdev}`], async () => {
        if (await isLuks(path)) throw luksError('E_DEVICE_NOT_BLANK', `Device ${path} already holds a LUKS header; refusing to format`, { details: { device: path, signature: 'crypto_LUKS' } });
        await assertBlank(ctx, ops, path, providerDefinition(opts.type).formatSpan);
        const formatArgv = providerDefinition(opts.type).formatArgv;
        if (formatArgv === undefined) throw luksError('E_LUKS_INVALID_ARGUMENT', `${opts.type} has no header to format`);
        const argv = formatArgv(path, opts, DEFAULT_PBKDF);
        // A probe that hung until the request's caller gave up must not lead to a write that caller was told did not happen.
        opts.signal?.throwIfAborted();
        await recheck(pinned, 'format it');
        await withKey(key, (stdin) => exec(ctx, argv, { stdin, what: `format ${path} as ${opts.type}` }));
        if (opts.token !== undefined) {
          if (opts.type !== 'luks2') throw luksError('E_LUKS_INVALID_ARGUMENT', 'Only a LUKS2 header carries tokens');
          // The disk's identity (no secret) goes in right after the format, before anything is mapped.
          await exec(ctx, ['cryptsetup', 'token', 'import', '--json-file=-', path], { stdin: Buffer.from(diskTokenJson(opts.token)), what: `record the portcullis token in ${path}` });
        }
        return luksUuid(path);
      });
    },

    /** Idempotent: an existing mapping of this name for this device is answered as is. */
    async open(device: string | DeviceIdentity, name: string, key: Uint8Array, opts: OpenOptions): Promise<OpenResult> {
      checkName(name);
      const pinned = await resolveDevice(device);
      const { path } = pinned;
      return locks.with([`dev:${pinned.rdev}`, `map:${name}`], async () => {
        const existing = await status(name);
        if (existing !== undefined) {
          if (!(await sameDevice(existing, pinned))) {
            throw luksError('E_MAPPING_IN_USE', `Mapping ${name} is already open for ${existing.device ?? 'another device'}, not ${path}`, {
              details: { name, differs: ['device'], device: path, existing_device: existing.device ?? null },
            });
          }
          return { name, mapperPath: await ensureNode(name), opened: false, legacyPassphrase: false, removedHalfCreated: false, status: existing, uuid: await luksUuidOf(path, opts.type) };
        }
        const flags: string[] = [];
        if (opts.readOnly === true) flags.push('--readonly');
        if (opts.allowDiscards === true) flags.push('--allow-discards');
        if (opts.perfNoWorkqueue !== false && (await supportsPerfFlags())) flags.push('--perf-no_read_workqueue', '--perf-no_write_workqueue');
        if (!providerDefinition(opts.type).header) {
          // A plain volume's ciphertext carries no signature. One that blkid recognises (a file system,
          // a LUKS header) is something else, which writing through a plain mapping would destroy.
          const found = await probeSignature(ctx, path, 'map it as plain');
          if (found !== undefined) {
            throw luksError('E_DEVICE_NOT_PLAIN', `Device ${path} holds a ${describeSignature(found)}, so it is not a plain-encrypted volume; refusing to map it as plain`, {
              details: { device: path, signature: found.kind, ...(found.offset === undefined ? {} : { offset: found.offset }) },
            });
          }
        }
        /** Maps it; true when only os-brick's old mangled passphrase opened it. */
        const provider = providerDefinition(opts.type);
        const argv = provider.openArgv(path, name, flags, opts);
        const openOnce = async (): Promise<boolean> => {
          try {
            await withKey(key, (stdin) => exec(ctx, argv, { stdin, what: `open ${path} as ${opts.type} mapping ${name}` }));
            return false;
          } catch (err) {
            if (!provider.header || !(err instanceof LuksError && err.code === 'E_WRONG_KEY')) throw err;
            // Volumes formatted by older os-brick carry a mangled hex passphrase; os-brick retries with it, so must we.
            const buffer = allocator.alloc(key.length * 2);
            try {
              const mangled = mangledHexPassphrase(key, buffer.view());
              if (mangled.length === key.length * 2) throw err; // identical to the proper hex: nothing else to try
              await exec(ctx, argv, { stdin: mangled, what: `open ${path} as ${name} with os-brick's legacy passphrase` });
              return true;
            } finally {
              buffer.wipe();
            }
          }
        };
        opts.signal?.throwIfAborted();
        await recheck(pinned, 'open it');
        let legacyPassphrase: boolean;
        let removedHalfCreated = false;
        try {
          legacyPassphrase = await openOnce();
        } catch (err) {
          // "Already exists" for a name status() called absent: a dm device without a table, what an open
          // killed midway leaves. Removed once, then the open runs again; anything else stands.
          if (!(err instanceof LuksError && err.code === 'E_DEVICE_BUSY') || !(await removeHalfCreated(ctx, name))) throw err;
          removedHalfCreated = true;
          legacyPassphrase = await openOnce();
        }
        const mapperPath = await ensureNode(name);
        // Read here, with the device already resolved: the caller needs both and would spend a process per question.
        return { name, mapperPath, opened: true, legacyPassphrase, removedHalfCreated, status: await status(name), uuid: await luksUuidOf(path, opts.type) };
      });
    },

    upgradeKeyslot: slotOps.upgradeKeyslot,
    verifyKey: slotOps.verifyKey,

    /**
     * Closing an absent mapping is success: detach must be idempotent, and
     * "already gone" is the goal. cryptsetup itself refuses a mapping in use
     * (exit 5, E_DEVICE_BUSY), so no holder count is asked first. `pending`:
     * a deferred close left the mapping to the kernel until its last holder goes.
     */
    async close(name: string, opts: { deferred?: boolean } = {}): Promise<{ closed: boolean; pending: boolean }> {
      checkName(name);
      return locks.with([`map:${name}`], async () => {
        const argv = ['cryptsetup', 'close', ...(opts.deferred === true ? ['--deferred'] : []), name];
        const result = await exec(ctx, argv, { ok: [4], what: `close ${name}` });
        const pending = result.code === 0 && opts.deferred === true && (await dmState(ops, name)).kind === 'live';
        return { closed: result.code === 0, pending };
      });
    },

    /** Grows the mapping to the device's current size. */
    async resize(name: string, key: Uint8Array): Promise<void> {
      checkName(name);
      await locks.with([`map:${name}`], () =>
        withKey(key, (stdin) => exec(ctx, ['cryptsetup', 'resize', '--key-file=-', name], { stdin, what: `resize ${name}` })),
      );
    },

    /**
     * Crypto-erase: wipes every keyslot; the data can never be decrypted
     * again. Only the disk that was proven: under the device lock, right
     * before the write, the node must still be the pinned major:minor, its
     * header must still carry `uuid`, and nothing may hold the device (a
     * mapping under any name, a partition table in use).
     * @throws E_DEVICE_CHANGED when the device or its header is not the proven one, E_DEVICE_BUSY when something holds it
     */
    async eraseKeyslots(pinned: DeviceIdentity, expect: { uuid: string }): Promise<void> {
      await locks.with([`dev:${pinned.rdev}`], async () => {
        await recheck(pinned, 'erase its keyslots');
        const header = await headerOf(pinned.path);
        if (header?.uuid !== expect.uuid) {
          throw luksError('E_DEVICE_CHANGED', `${pinned.path} no longer holds the LUKS header ${expect.uuid} (now ${header?.uuid ?? 'none'}); refusing to erase it`, {
            details: { device: pinned.path, expected_uuid: expect.uuid, uuid: header?.uuid ?? null },
          });
        }
        const holders = await deviceHolders(ops, pinned);
        if (holders.length > 0) {
          throw luksError('E_DEVICE_BUSY', `${pinned.path} is held by ${holders.join(', ')} (a mapping under another name, or a partition in use); refusing to erase it`, {
            details: { device: pinned.path, holders },
          });
        }
        await exec(ctx, ['cryptsetup', '--batch-mode', 'luksErase', pinned.path], { what: `erase the keyslots of ${pinned.path}` });
      });
    },

    /** The LUKS header of a pinned device, read in-process; undefined when it holds none. */
    header: (pinned: DeviceIdentity): Promise<LuksHeader | undefined> => headerOf(pinned.path),
    /** Disks whose portcullis header token `match` accepts (a scan of the host's block devices; erase without a record). */
    disksWithToken: (match: (token: DiskToken) => boolean) => disksWithToken(ops, match),
    /** Kernel names of what holds the device (dm mappings over it, partitions' users): sysfs, no process. */
    holdersOf: (pinned: DeviceIdentity): Promise<string[]> => deviceHolders(ops, pinned),

    /** Holders of the mapping (a mounted file system, a guest). */
    holders: (name: string): Promise<number> => (checkName(name), holderCount(ctx, name)),
    /** dm-crypt's version, or undefined when the kernel has no crypt target. */
    cryptTarget: (): Promise<string | undefined> => cryptTargetVersion(ctx),
    /** The real device behind os-brick's attachment symlink, when it already points at mapping `name`. */
    deviceBehindSymlink: async (name: string, link: string): Promise<string> => deviceBehindSymlink(ops, await status(name), link),
    /** Points os-brick's attachment symlink at the mapping; returns why not, or undefined. */
    pointSymlink: (link: string, name: string): Promise<string | undefined> => (checkName(name), pointSymlink(ops, link, name)),

    /** Every crypt mapping the kernel has, whoever made it. */
    list: (): Promise<MappingStatus[]> => listMappings(ctx, (name) => NAME.test(name), describe),
  };
}
