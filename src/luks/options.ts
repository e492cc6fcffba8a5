import type { DeviceOps } from './device/ops.js';
import type { CryptOps } from './crypt/crypt-ops.js';
import type { SecureAllocator } from '../util/secure-memory.js';
import type { MappingStatus } from './mapping/status.js';
import type { Provider } from './providers/index.js';

/** The LUKS driver's inputs and answers, and what a provider (src/luks/providers/) defines. */

export interface Pbkdf {
  type: 'pbkdf2' | 'argon2id' | 'argon2i' | 'default';
  /** pbkdf2: --pbkdf-force-iterations; argon2: time cost (--pbkdf-force-iterations too). */
  iterations?: number;
  /** argon2 memory in KiB. */
  memoryKiB?: number;
}

export interface FormatOptions {
  type: 'luks' | 'luks2';
  cipher?: string;
  /** Bits, as cryptsetup --key-size. */
  keySize?: number;
  /** Default: pbkdf2 with 1000 iterations — keys are ≥ 256 random bits, a slow PBKDF buys nothing. */
  pbkdf?: Pbkdf;
  /** LUKS2 only. */
  label?: string;
  /** The request's deadline: checked right before the format is written, after any wait on a probe. */
  signal?: AbortSignal | undefined;
}

export interface OpenOptions {
  type: Exclude<Provider, 'nop'>;
  readOnly?: boolean;
  allowDiscards?: boolean;
  /** Use the kernel's no_read/no_write_workqueue flags when supported (default true). */
  perfNoWorkqueue?: boolean;
  /** plain only (LUKS reads them from its header). */
  cipher?: string;
  keySize?: number;
  /** The request's deadline: checked right before the mapping is made, after any wait on a probe. */
  signal?: AbortSignal | undefined;
}

export interface OpenResult {
  name: string;
  mapperPath: string;
  /** False when the mapping was already open for this device (idempotent open). */
  opened: boolean;
  /** True when only os-brick's old mangled passphrase opened it. */
  legacyPassphrase: boolean;
  /** True when a table-less dm device of this name (an earlier open killed midway) was removed first. */
  removedHalfCreated: boolean;
  /** The mapping as the kernel has it now (size, device); undefined only if it vanished at once. */
  status: MappingStatus | undefined;
  /** The LUKS UUID of the device; null for plain mappings. */
  uuid: string | null;
}

export interface DriverOptions {
  /** The privileged operations: in-process on the host (localDeviceOps), the guest agent's in the test VM. */
  ops: DeviceOps;
  /** How dm-crypt and LUKS are driven: the privileged helper's CryptOps in production. @default cryptsetup's CLI through ops.run */
  crypt?: CryptOps;
  /** Where the hex passphrase is built for cryptsetup's stdin; the daemon passes locked memory. @default plain memory */
  allocator?: SecureAllocator;
  /** Per command; default 120 s (a LUKS format with a default PBKDF can take seconds under emulation). */
  timeoutMs?: number;
}

/** A LUKS header's contents: LUKS2's JSON metadata, or LUKS1's keyslots from its binary header. */
export type LuksDump = { version: 2; metadata: Record<string, unknown> } | { version: 1; keyslots: KeyslotKdf[] };

/** One enabled keyslot's PBKDF, as the header says. */
export interface KeyslotKdf {
  slot: number;
  type: string;
  /** pbkdf2 iterations, or argon2 time cost. */
  iterations: number;
  /** argon2 memory in KiB; absent for pbkdf2. */
  memoryKiB?: number;
}

export interface KeyslotUpgrade {
  upgraded: boolean;
  /** What the key's keyslot had before, e.g. "argon2id t=4 m=1048576"; null when nothing needed doing. */
  from: string | null;
  to: string;
}

export const DEFAULT_PBKDF: Pbkdf = { type: 'pbkdf2', iterations: 1000 };

/**
 * One on-disk format (luks1, luks2, plain): as in os-brick, they differ only
 * in how a device is formatted and opened. One file each under providers/.
 */
export interface ProviderDefinition {
  readonly name: OpenOptions['type'];
  /** What `cryptsetup status` calls it (LUKS1, LUKS2, PLAIN). */
  readonly kernelType: string;
  /** Has a LUKS header (keyslots, UUID); plain has none. */
  readonly header: boolean;
  /**
   * Bytes from the start of the device that a format may write (its data
   * offset): the blank check covers all of them. 0 when nothing is formatted.
   */
  readonly formatSpan: number;
  /** The luksFormat argv (the key follows on stdin); undefined: nothing to format. */
  readonly formatArgv: ((path: string, opts: FormatOptions, defaultPbkdf: Pbkdf) => string[]) | undefined;
  /** The argv that maps `path` as `name` (the key follows on stdin). */
  openArgv(path: string, name: string, flags: readonly string[], opts: OpenOptions): string[];
}
