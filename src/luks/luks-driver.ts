import type { DeviceIdentity } from './device/identity.js';
import type { DiskToken } from './header/token.js';
import type { SlotKey } from './header/volume-token.js';
import type { LuksHeader } from './header/read.js';
import type { FormatOptions, KeyslotKdf, KeyslotUpgrade, LuksDump, OpenOptions, OpenResult, Pbkdf } from './options.js';
import type { MappingStatus } from './mapping/status.js';

/**
 * What src/luks offers the service: everything the daemon may do to devices
 * and mappings, and nothing else. createLuksDriver (driver.ts) implements it
 * on cryptsetup and the device operations; a test may implement it whole.
 * Device arguments are a path (resolved and checked) or an identity a request
 * pinned already.
 */
export interface LuksDriver {
  // Mapping state: sysfs answers (no process); cryptsetup status only for the admin views.
  /** The mapping's state from sysfs; undefined when absent or left without a table. */
  status(name: string): Promise<MappingStatus | undefined>;
  /** `cryptsetup status`: what sysfs does not say (cipher, key size, in use), for the admin views. */
  describe(name: string): Promise<MappingStatus | undefined>;
  /** Every crypt mapping the kernel has, whoever made it. */
  list(): Promise<MappingStatus[]>;
  /** How many holders keep a mapping open (one dmsetup; only to explain a refused close). */
  holders(name: string): Promise<number>;

  // Devices: identity, header, what uses them.
  /** Pins a device for a request: its real path and major:minor. */
  identify(device: string): Promise<DeviceIdentity>;
  /** As identify, refusing a dm-crypt mapping as a backing device (E_DEVICE_IS_MAPPING). */
  pinBacking(device: string): Promise<DeviceIdentity>;
  /** The LUKS header, read in-process; undefined when the device holds none. */
  header(pinned: DeviceIdentity): Promise<LuksHeader | undefined>;
  isLuks(device: string | DeviceIdentity): Promise<boolean>;
  uuid(device: string | DeviceIdentity): Promise<string>;
  dump(device: string | DeviceIdentity): Promise<LuksDump>;
  /** Kernel names of what holds the device (sysfs). */
  holdersOf(pinned: DeviceIdentity): Promise<string[]>;
  /** Disks whose portcullis header token `match` accepts (a scan of the host's block devices). */
  disksWithToken(match: (token: DiskToken) => boolean): Promise<Array<{ pinned: DeviceIdentity; header: LuksHeader }>>;

  // Format and open: cryptsetup, the key on stdin only.
  /** Formats a provably blank device; returns its new LUKS UUID. `token`: written into a LUKS2 header. */
  format(device: string | DeviceIdentity, key: Uint8Array, opts: FormatOptions & { token?: DiskToken; volumeToken?: Record<string, SlotKey> }): Promise<string>;
  /** Idempotent: an existing mapping of this name for this device is answered as is. */
  open(device: string | DeviceIdentity, name: string, key: Uint8Array, opts: OpenOptions): Promise<OpenResult>;
  /** Idempotent: an absent mapping is closed. */
  close(name: string, opts?: { deferred?: boolean }): Promise<{ closed: boolean; pending: boolean }>;
  /** Grows the mapping to the device's current size. */
  resize(name: string, key: Uint8Array): Promise<void>;

  // Keyslots.
  keyslots(device: string | DeviceIdentity): Promise<KeyslotKdf[]>;
  upgradeKeyslot(device: string | DeviceIdentity, key: Uint8Array, opts?: { pbkdf?: Pbkdf; legacyPassphrase?: boolean }): Promise<KeyslotUpgrade>;
  /** Whether `key` opens a keyslot of the device, without mapping anything. */
  verifyKey(device: string | DeviceIdentity, key: Uint8Array): Promise<boolean>;
  // Rotation (a rekey's steps, keyslots/rotation.ts): the caller holds the device's locks across them.
  /** The keyslot `key` opens (one PBKDF run, nothing mapped), or undefined. */
  slotOpenedBy(pinned: DeviceIdentity, key: Uint8Array): Promise<number | undefined>;
  /** Adds a keyslot for `next` unlocked by `existing`, and proves `next` opens it. @returns the new slot */
  addSlot(pinned: DeviceIdentity, version: 1 | 2, existing: Uint8Array, next: Uint8Array, pbkdf: Pbkdf): Promise<number>;
  /** Destroys `slot`; `kept` is the slot a key proven under the same locks opens, never the same. */
  removeSlot(pinned: DeviceIdentity, slot: number, kept: number): Promise<void>;
  /** Writes the LUKS2 portcullis volume token (replacing `tokenId` in place when given). @returns its id */
  writeVolumeToken(pinned: DeviceIdentity, slots: Record<string, SlotKey>, tokenId?: number): Promise<number>;
  /** Crypto-erase of the proven disk: wipes every keyslot, refusing a changed or held device. */
  eraseKeyslots(pinned: DeviceIdentity, expect: { uuid: string }): Promise<void>;

  // The host.
  version(): Promise<{ version: string; major: number; minor: number; patch: number }>;
  /** dm-crypt's version, or undefined when the kernel has no crypt target. */
  cryptTarget(): Promise<string | undefined>;
  /** The real device behind os-brick's attachment symlink, when it already points at mapping `name`. */
  deviceBehindSymlink(name: string, link: string): Promise<string>;
  /** Points os-brick's attachment symlink at the mapping; returns why not, or undefined. */
  pointSymlink(link: string, name: string): Promise<string | undefined>;
}
