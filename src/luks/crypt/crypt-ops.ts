import type { Signature } from '../device/blank.js';
import type { DeviceIdentity } from '../device/identity.js';
import type { LuksHeader } from '../header/read.js';
import type { MappingStatus } from '../mapping/status.js';
import type { Pbkdf } from '../options.js';

export type { Signature } from '../device/blank.js';

/**
 * What the driver asks of dm-crypt and LUKS, typed: the seam between the
 * driver's decisions (which device, which name, whether it is safe) and the
 * thing that carries them out. Two implementations, registered by name:
 * `helper` (the privileged helper on libcryptsetup, no process per
 * operation; production) and `cryptsetup` (the CLI through DeviceOps.run,
 * for a host run without the helper). Passphrases are the caller's buffers
 * (os-brick's hex of the key, in locked memory) and are never kept.
 *
 * Every device argument is a pinned identity: the helper checks the path
 * still has that major:minor on the descriptor it then uses.
 */
export interface CryptOps {
  readonly via: 'helper' | 'cryptsetup';
  /** @throws E_WRONG_KEY, E_DEVICE_BUSY (the name exists), E_DM_UNAVAILABLE */
  open(req: CryptOpenRequest): Promise<void>;
  /** @returns false when no mapping of that name exists. @throws E_DEVICE_BUSY when it is in use */
  close(name: string, deferred: boolean): Promise<boolean>;
  resize(name: string, passphrase: Buffer): Promise<void>;
  /** luksFormat, then (LUKS2) the token, before anything maps the device. */
  format(req: CryptFormatRequest): Promise<void>;
  /** Destroys every keyslot (luksErase). */
  erase(device: DeviceIdentity): Promise<void>;
  /** The keyslot `passphrase` opens, or undefined when none does. One PBKDF run. */
  testKey(device: DeviceIdentity, passphrase: Buffer): Promise<number | undefined>;
  /** Rewrites the keyslot `old` opens with `next` under `pbkdf` (luksChangeKey): the new slot is written before the old one goes. */
  changeKey(device: DeviceIdentity, version: 1 | 2, old: Buffer, next: Buffer, pbkdf: Pbkdf): Promise<void>;
  /** Adds a keyslot for `next`, unlocked by `existing`. @returns the new slot */
  addKey(device: DeviceIdentity, version: 1 | 2, existing: Buffer, next: Buffer, pbkdf: Pbkdf): Promise<number>;
  /** Destroys one keyslot (never the last: the caller proves another opens). */
  removeKey(device: DeviceIdentity, slot: number): Promise<void>;
  /**
   * Stores a LUKS2 token object (no secret in it) in one header write:
   * replaces token `tokenId` when given, else takes a free id.
   * @returns the token's id
   */
  setToken(device: DeviceIdentity, json: string, tokenId?: number): Promise<number>;
  /** The LUKS header, as libcryptsetup (helper) or the in-process reader (cryptsetup) reads it; undefined: none. */
  header(device: DeviceIdentity): Promise<LuksHeader | undefined>;
  /** The admin view of one mapping (cipher, key size, holders); undefined when absent. */
  describe(name: string): Promise<MappingStatus | undefined>;
  /** Names of every crypt mapping the kernel has. */
  list(): Promise<string[]>;
  /** How many holders keep the mapping open. */
  openCount(name: string): Promise<number>;
  /** dm-crypt's target version ("1.24.0"), or undefined without one. */
  cryptTarget(): Promise<string | undefined>;
  /** Whether the no_read/no_write_workqueue flags work here. */
  supportsNoWorkqueue(): Promise<boolean>;
  /** Removes a table-less mapping cryptsetup left (dm UUID CRYPT-…); false when there is none of that kind. */
  removeHalfCreated(name: string): Promise<boolean>;
  /** Makes /dev/mapper/NAME when it is missing. */
  makeNode(name: string): Promise<void>;
  /** The first signature (blkid -p) on the device, or undefined. @throws E_DEVICE_UNREADABLE */
  probe(device: DeviceIdentity, purpose: string): Promise<Signature | undefined>;
  /** The cryptsetup (or libcryptsetup) version. */
  version(): Promise<{ version: string; major: number; minor: number; patch: number }>;
}


export interface CryptOpenRequest {
  type: 'luks' | 'luks2' | 'plain';
  device: DeviceIdentity;
  name: string;
  passphrase: Buffer;
  readOnly: boolean;
  allowDiscards: boolean;
  noWorkqueue: boolean;
  /** plain only: the header says them otherwise. */
  cipher?: string | undefined;
  keySize?: number | undefined;
}

export interface CryptFormatRequest {
  version: 'luks1' | 'luks2';
  device: DeviceIdentity;
  passphrase: Buffer;
  cipher?: string | undefined;
  keySize?: number | undefined;
  pbkdf: Pbkdf;
  label?: string | undefined;
  /** LUKS2: a token object to store in the header. */
  tokenJson?: string | undefined;
}
