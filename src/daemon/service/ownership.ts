import type { DeviceIdentity, MappingStatus } from '../../luks/driver.js';
import { providerDefinition, type Provider } from '../../luks/providers/index.js';
import { daemonError } from '../errors.js';
import type { VolumeRecord } from '../volume-registry.js';

/**
 * Ownership (docs/api.md, "Ownership"): the one place that decides whether a
 * request may act on a mapping. The daemon acts only on mappings it made,
 * for the project that made them. A mapping is portcullis' own when the
 * registry holds its record: made by this daemon, or adopted at start
 * because the saved record names the same device. Every other crypt mapping
 * on the host (crypttab, swap, the host's own disks) is foreign: listed for
 * admins, never attached over, detached, resized, erased or adopted.
 */

/** What an attach asks for, as far as an existing mapping can be compared with it. */
export interface AttachWish {
  /** The device the request pinned: the same name over another device is another request. */
  device: DeviceIdentity;
  projectId: string;
  keyId: string;
  provider: Exclude<Provider, 'nop'>;
  readOnly: boolean;
}

/**
 * The record of an own mapping.
 * @throws E_MAPPING_FOREIGN when the kernel has the mapping but portcullis did not make it
 */
export function ownRecord(name: string, record: VolumeRecord | undefined, operation: string): VolumeRecord {
  if (record === undefined || record.detached === true) {
    throw daemonError('E_MAPPING_FOREIGN', `Mapping ${name} exists but portcullis did not make it (crypttab, swap or another tool's); refusing to ${operation} it`, {
      details: { name },
    });
  }
  return record;
}

/**
 * Which fields of an attach differ from the existing mapping: the record's
 * project and key, the kernel's type and mode. Null fields of an old record
 * (adopted before records carried owners) are not compared here; the caller
 * verifies the key against the header instead.
 */
export function attachDifferences(record: VolumeRecord, status: MappingStatus, wish: AttachWish): string[] {
  const differs: string[] = [];
  if (status.deviceRdev !== undefined && status.deviceRdev !== wish.device.rdev) differs.push('device');
  if (record.projectId !== null && record.projectId !== wish.projectId) differs.push('project_id');
  if (record.keyId !== null && record.keyId !== wish.keyId) differs.push('key_id');
  if (status.type !== undefined && !opensAs(wish.provider, status.type)) differs.push('provider');
  if (status.readOnly !== wish.readOnly) differs.push('read_only');
  return differs;
}

/**
 * Whether a mapping of the kernel's `type` is what `provider` opens: `luks`
 * is cryptsetup's luksOpen, which opens LUKS1 and LUKS2 alike (os-brick's
 * LuksEncryptor on a LUKS2 volume), so either is the same request.
 */
function opensAs(provider: AttachWish['provider'], type: string): boolean {
  const kernel = type.toUpperCase();
  if (provider === 'luks') return kernel === 'LUKS1' || kernel === 'LUKS2';
  return kernel === providerDefinition(provider).kernelType;
}

/**
 * An existing own mapping answers an attach as idempotent only when nothing differs.
 * @throws E_MAPPING_CONFLICT naming what differs
 */
export function assertSameAttach(name: string, record: VolumeRecord, status: MappingStatus, wish: AttachWish): void {
  const differs = attachDifferences(record, status, wish);
  if (differs.length === 0) return;
  throw daemonError('E_MAPPING_CONFLICT', `Mapping ${name} is already open with another ${differs.join(', ')}; refusing to answer it for this request (detach it first if it is stale)`, {
    details: { name, differs },
  });
}
