import { luksError } from './errors.js';
import { identifyDevice, rdevAt, type DeviceIdentity } from './device/identity.js';
import type { DeviceOps } from './device/ops.js';
import type { LuksHeader } from './header/read.js';
import type { CryptOps } from './crypt/crypt-ops.js';
import { cliCryptOps } from './crypt/cli.js';
import { dmState } from './mapping/sysfs-state.js';
import type { MappingStatus } from './mapping/status.js';
import type { ExecContext } from './commands/exec.js';
import { checkKeyLength, hexPassphrase } from './commands/passphrase.js';
import { DEVICE_PATH_PATTERN, MAPPING_NAME_PATTERN } from './names.js';
import type { DriverOptions, LuksDump, OpenOptions } from './options.js';
import { keyedLock, type KeyedLock } from '../util/keyed-lock.js';
import { plainAllocator, type SecureAllocator } from '../util/secure-memory.js';

/**
 * What every part of the driver shares (format and erase, open, keyslots,
 * the views): the host's operations and commands, one lock table, the
 * memory keys are encoded in, and the checks every write makes. One
 * declared context, built once per driver, instead of closures lent around.
 */
export interface DriverContext {
  ops: DeviceOps;
  ctx: ExecContext;
  /** dm-crypt and LUKS themselves: the privileged helper, or cryptsetup's CLI. */
  crypt: CryptOps;
  /** One lock per device (dev:major:minor) and per mapping name (map:name). */
  locks: KeyedLock;
  allocator: SecureAllocator;
  /** Runs `fn` with the key as cryptsetup's hex passphrase in (locked) memory, wiped after. */
  withKey<T>(key: Uint8Array, fn: (stdin: Buffer) => Promise<T>): Promise<T>;
  /** A path resolved to its identity (checked to be a /dev path); an identity pinned already passes as is. */
  resolveDevice(device: string | DeviceIdentity): Promise<DeviceIdentity>;
  /** Right before a write: the pinned path must still be the pinned device. @throws E_DEVICE_CHANGED */
  recheck(pinned: DeviceIdentity, doing: string): Promise<void>;
  /** @throws E_LUKS_INVALID_ARGUMENT for a name dm or cryptsetup would not take */
  checkName(name: string): void;
  /** The mapping's state from sysfs (no process): undefined when absent or left without a table. */
  status(name: string): Promise<MappingStatus | undefined>;
  /** The LUKS header of a pinned device (libcryptsetup's verdict through the helper). */
  headerOf(pinned: DeviceIdentity): Promise<LuksHeader | undefined>;
  /** @throws E_DEVICE_WRONG when the device holds no LUKS header */
  dumpOf(pinned: DeviceIdentity): Promise<LuksDump>;
  /** The LUKS UUID of a header device; null for plain. @throws E_DEVICE_WRONG */
  luksUuidOf(pinned: DeviceIdentity, type: OpenOptions['type']): Promise<string | null>;
}

export function driverContext(options: DriverOptions): DriverContext {
  const { ops } = options;
  const ctx: ExecContext = { runner: ops, timeoutMs: options.timeoutMs ?? 120_000 };
  const allocator = options.allocator ?? plainAllocator();
  const crypt = options.crypt ?? cliCryptOps(ops, ctx, allocator);
  const headerOf = (pinned: DeviceIdentity): Promise<LuksHeader | undefined> => crypt.header(pinned);

  function checkName(name: string): void {
    if (!MAPPING_NAME_PATTERN.test(name)) {
      throw luksError('E_LUKS_INVALID_ARGUMENT', `Mapping name "${name}" is invalid (1–127 of A-Z a-z 0-9 _ . : + -, not starting with a symbol)`, { details: { name } });
    }
  }

  return {
    ops,
    ctx,
    crypt,
    locks: keyedLock(),
    allocator,
    async withKey(key, fn) {
      checkKeyLength(key);
      const passphrase = allocator.alloc(key.length * 2);
      try {
        return await fn(hexPassphrase(key, passphrase.view()));
      } finally {
        passphrase.wipe();
      }
    },
    async resolveDevice(device) {
      if (typeof device !== 'string') return device;
      if (!DEVICE_PATH_PATTERN.test(device) || device.includes('..')) {
        throw luksError('E_LUKS_INVALID_ARGUMENT', `Device path "${device}" is not a /dev path`, { details: { device } });
      }
      return identifyDevice(ops, device);
    },
    // A node reused on hot-plug since the request pinned it is refused, not written.
    async recheck(pinned, doing) {
      const now = await rdevAt(ops, pinned.path);
      if (now === pinned.rdev) return;
      throw luksError('E_DEVICE_CHANGED', `${pinned.path} is no longer device ${pinned.rdev} (now ${now ?? 'nothing'}): it was replaced while this request ran; refusing to ${doing}`, {
        details: { device: pinned.path, pinned: pinned.rdev, now: now ?? null },
      });
    },
    checkName,
    async status(name) {
      checkName(name);
      const state = await dmState(ops, name);
      return state.kind === 'live' ? state.status : undefined;
    },
    headerOf,
    async dumpOf(pinned) {
      const header = await headerOf(pinned);
      if (header === undefined) throw luksError('E_DEVICE_WRONG', `Device ${pinned.path} holds no LUKS header`, { details: { device: pinned.path } });
      return header.dump;
    },
    async luksUuidOf(pinned, type) {
      if (type === 'plain') return null;
      const header = await headerOf(pinned);
      if (header === undefined) throw luksError('E_DEVICE_WRONG', `Device ${pinned.path} holds no LUKS header, so it has no LUKS UUID`, { details: { device: pinned.path } });
      return header.uuid;
    },
  };
}

/** Ensures /dev/mapper/NAME exists: without udev libdevmapper makes it itself, and mknodes repairs a missing one synchronously. */
export async function ensureNode(dc: DriverContext, name: string): Promise<string> {
  const mapperPath = `/dev/mapper/${name}`;
  if ((await rdevAt(dc.ops, mapperPath)) === undefined) await dc.crypt.makeNode(name);
  return mapperPath;
}
