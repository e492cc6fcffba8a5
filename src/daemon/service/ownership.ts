import type { DeviceIdentity, MappingStatus } from '../../luks/driver.js';
import { luksError } from '../../luks/errors.js';
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
  if (record.projectId !== null && record.projectId !== wish.projectId) differs.push('project_id');
  if (record.keyId !== null && record.keyId !== wish.keyId) differs.push('key_id');
  if (status.type !== undefined && status.type.toUpperCase() !== providerDefinition(wish.provider).kernelType) differs.push('provider');
  if (status.readOnly !== wish.readOnly) differs.push('read_only');
  return differs;
}

/**
 * An existing own mapping answers an attach as idempotent only when nothing differs.
 * @throws E_MAPPING_CONFLICT naming what differs
 */
export function assertSameAttach(name: string, record: VolumeRecord, status: MappingStatus, wish: AttachWish): void {
  const differs = attachDifferences(record, status, wish);
  if (differs.length === 0) return;
  throw luksError('E_MAPPING_CONFLICT', `Mapping ${name} is already open with another ${differs.join(', ')}; refusing to answer it for this request (detach it first if it is stale)`, {
    details: { name, differs },
  });
}

/** What an erase may act on, from the record alone: never from the request body. */
export interface EraseTarget {
  /** The recorded device, with its recorded major:minor when the record has one (checked again before the erase). */
  device: string | DeviceIdentity;
  /** The instance key portcullis created for this disk, the only key an erase deletes. */
  keyId: string | undefined;
}

/**
 * @throws E_VOLUME_NOT_FOUND when no record names the disk; E_ERASE_REFUSED when the
 * request's project, device or key is not the one the record names
 */
export function eraseTarget(name: string, record: VolumeRecord | undefined, request: { projectId: string; device?: DeviceIdentity | undefined; keyId?: string | undefined }): EraseTarget {
  if (record === undefined || record.device === undefined) {
    throw daemonError('E_VOLUME_NOT_FOUND', `No ephemeral disk ${name} is recorded here (never attached through this daemon, or already erased); nothing was erased`, {
      details: { name },
    });
  }
  const refuse = (what: string, details: Record<string, unknown>) =>
    daemonError('E_ERASE_REFUSED', `Refusing to erase ${name}: ${what}; nothing was erased`, { details: { name, ...details } });
  if (record.projectId !== request.projectId) throw refuse(`it was attached for another project than ${request.projectId}`, { project_id: request.projectId });
  // One device, however named: major:minor where the record has it, else the path.
  if (request.device !== undefined && (record.rdev === undefined ? request.device.path !== record.device : request.device.rdev !== record.rdev)) {
    throw refuse(`the request names device ${request.device.path} (${request.device.rdev}), but the disk is ${record.device}${record.rdev === undefined ? '' : ` (${record.rdev})`}`, {
      device: request.device.path,
      recorded_device: record.device,
    });
  }
  const instanceKey = record.keyScope === 'instance' && record.keyCreated === true && record.keyId !== null ? record.keyId : undefined;
  if (request.keyId !== undefined && request.keyId !== instanceKey) {
    throw refuse(`key ${request.keyId} is not the instance key portcullis created for this disk`, { key_id: request.keyId });
  }
  return { device: record.rdev === undefined ? record.device : { path: record.device, rdev: record.rdev }, keyId: instanceKey };
}
