import { performance } from 'node:perf_hooks';
import type { DeviceIdentity, DiskToken, LuksHeader } from '../../luks/driver.js';
import { canonicalKeyId } from '../../keyclient/key-id.js';
import type { KeyedLock } from '../../util/keyed-lock.js';
import { daemonError } from '../errors.js';
import type { DetachAnswer, EphemeralDetachBody } from '../../api/wire.js';
import type { Peer } from '../api/peer.js';
import type { VolumeRecord } from '../volume-registry.js';
import { closeHeld } from './close-mapping.js';
import { codeOf, elapsed, keyContext, reportOutcome, type ServiceDeps } from './context.js';
import { killPoint } from './kill-point.js';
import { lockKey } from './lock-keys.js';
import { consumersOf } from './consumers.js';

/** A disk proven to be the one an erase names: by what its header holds. */
interface ProvenDisk {
  pinned: DeviceIdentity;
  header: LuksHeader;
}

const refuse = (name: string, what: string, details: Record<string, unknown> = {}) =>
  daemonError('E_ERASE_REFUSED', `Refusing to erase ${name}: ${what}; nothing was erased`, { details: { name, ...details } });

/**
 * Crypto-erase of an ephemeral disk. The disk is proven by what it holds,
 * never by a path or a major:minor (both are reused): its LUKS UUID as
 * recorded at format, and its header token naming this disk and project. It
 * is found through the live mapping, the device the request names, the
 * recorded device, or, when those fail or the record is gone, a scan of the
 * host's disks for the token. Only a key created for this one disk is
 * deleted, as its token (written at format, never rewritten) and record say.
 */
export function eraseService(deps: ServiceDeps, locks: KeyedLock) {
  const { driver } = deps;

  /** Whether `header` is the disk: the recorded UUID where there is one, and a token (where present) naming this disk and project. */
  function proves(name: string, projectId: string, record: VolumeRecord | undefined, header: LuksHeader | undefined): header is LuksHeader {
    if (header === undefined) return false;
    if (record?.luksUuid !== undefined && header.uuid !== record.luksUuid) return false;
    if (header.token === undefined) return record?.luksUuid !== undefined;
    return header.token.name === name && header.token.project_id === projectId;
  }

  async function candidate(path: string, rdev?: string): Promise<{ pinned: DeviceIdentity; header: LuksHeader | undefined } | undefined> {
    const pinned = await driver.identify(path).catch(() => undefined);
    if (pinned === undefined || (rdev !== undefined && pinned.rdev !== rdev)) return undefined;
    return { pinned, header: await driver.header(pinned) };
  }

  /** @throws E_ERASE_REFUSED when the named device is not the disk, or several disks claim to be it */
  async function findDisk(name: string, body: EphemeralDetachBody, record: VolumeRecord | undefined, live: { path: string; rdev: string } | undefined): Promise<ProvenDisk | undefined> {
    if (body.device !== undefined) {
      const named = await candidate(body.device);
      if (named === undefined || !proves(name, body.project_id, record, named.header)) {
        throw refuse(name, `device ${body.device} is not the disk (its LUKS UUID ${named?.header?.uuid ?? 'none'}${record?.luksUuid === undefined ? '' : `, recorded ${record.luksUuid}`}; its token ${named?.header?.token?.name ?? 'none'})`, { device: body.device });
      }
      return { pinned: named.pinned, header: named.header };
    }
    for (const at of [live, record?.device === undefined ? undefined : { path: record.device, rdev: record.rdev }]) {
      if (at === undefined) continue;
      const found = await candidate(at.path, at.rdev);
      if (found !== undefined && proves(name, body.project_id, record, found.header)) return { pinned: found.pinned, header: found.header };
    }
    const scanned = (await driver.disksWithToken((t: DiskToken) => t.name === name && t.project_id === body.project_id)).filter((d) => proves(name, body.project_id, record, d.header));
    if (scanned.length > 1) throw refuse(name, `${scanned.length} disks carry its token (${scanned.map((d) => d.pinned.path).join(', ')}); name the one to erase with device`, { devices: scanned.map((d) => d.pinned.path) });
    return scanned[0];
  }

  /** The key created for this one disk, if any: the header token's word where it has one (written at format, never rewritten), else the record's. */
  function createdKey(record: VolumeRecord | undefined, token: DiskToken | undefined): string | undefined {
    if (token !== undefined) return token.key_scope === 'instance' && token.key_created ? token.key_id : undefined;
    return record?.keyScope === 'instance' && record.keyCreated === true && record.keyId !== null ? record.keyId : undefined;
  }

  async function deleteKey(name: string, body: EphemeralDetachBody, keyId: string, peer: Peer): Promise<void> {
    try {
      await deps.keys().delete(keyContext(body.project_id, body.auth?.token), keyId);
    } catch (err) {
      // Already gone (an earlier erase whose answer was lost) is what erase wants.
      if (codeOf(err) !== 'E_KEY_NOT_FOUND') throw err;
    }
    deps.log.audit('key_access', { op: 'delete', purpose: `ephemeral erase ${name}`, project_id: body.project_id, key_id: keyId, outcome: 'ok', peer_uid: peer.uid, peer_pid: peer.pid });
  }

  async function eraseHeld(name: string, body: EphemeralDetachBody, record: VolumeRecord | undefined, peer: Peer, started: number): Promise<DetachAnswer> {
    const status = await driver.status(name);
    const live = status?.device !== undefined && status.deviceRdev !== undefined ? { path: status.device, rdev: status.deviceRdev } : undefined;
    if (status !== undefined && (record === undefined || record.detached === true)) throw refuse(name, 'a mapping of that name exists that portcullis did not make');
    const disk = await findDisk(name, body, record, live);
    const keyId = createdKey(record, disk?.header.token);
    if (body.key !== undefined && canonicalKeyId(body.key.id) !== keyId) throw refuse(name, `key ${body.key.id} is not a key portcullis created for this disk`, { key_id: body.key.id });
    if (disk === undefined && keyId === undefined) {
      if (record === undefined) {
        throw daemonError('E_VOLUME_NOT_FOUND', `No ephemeral disk ${name} is recorded here and no disk on this host carries its token (never attached through this daemon, or already erased); nothing was erased`, { details: { name } });
      }
      throw refuse(name, `the disk recorded at ${record.device ?? '?'}${record.luksUuid === undefined ? '' : ` (LUKS UUID ${record.luksUuid})`} is not on this host any more and its key is not one portcullis created for it; the record is kept. Name the disk's device to erase it`, { recorded_device: record.device ?? null });
    }
    let detached: DetachAnswer = { name, closed: false, deferred: false, timings_ms: { total: 0 } };
    let wiped = false;
    if (disk !== undefined) {
      await locks.with([lockKey.device(disk.pinned.rdev)], async () => {
        detached = await closeHeld(deps, name, { deferred: false });
        killPoint('erase:closed');
        await driver.eraseKeyslots(disk.pinned, { uuid: disk.header.uuid });
        wiped = true;
        killPoint('erase:erased');
      });
    } else {
      deps.log.warn('ephemeral disk not found on this host; deleting the key created for it is the erase', { name, recorded_device: record?.device ?? null, key_id: keyId ?? null });
    }
    if (keyId !== undefined && deps.keys().capabilities.deletes) await deleteKey(name, body, keyId, peer);
    const keyDeleted = keyId !== undefined && deps.keys().capabilities.deletes;
    killPoint('erase:key-deleted');
    deps.registry.delete(name);
    // The disk is erased: it consumes no key any more (a deleted secret took its consumers with it; this then finds none).
    const usedKey = record?.keyId ?? disk?.header.token?.key_id;
    if (usedKey != null) await consumersOf(deps).released(body.project_id, body.auth?.token, usedKey, name);
    const erased = wiped || keyDeleted;
    reportOutcome(deps, 'detach', name, 'ok', started, { ephemeral: true, erase: true, erased, keyslots_wiped: wiped, key_deleted: keyDeleted, key_id: keyId ?? null, device: disk?.pinned.path ?? null });
    return { ...detached, erased, keyslots_wiped: wiped, key_deleted: keyDeleted, timings_ms: { total: elapsed(started) } };
  }

  async function erase(name: string, body: EphemeralDetachBody, peer: Peer): Promise<DetachAnswer> {
    const started = performance.now();
    try {
      return await locks.with([lockKey.mapping(name)], async () => {
        const record = deps.registry.get(name);
        if (record !== undefined && record.keyScope === undefined) throw refuse(name, 'it is a volume, not an ephemeral disk');
        if (record !== undefined && record.projectId !== body.project_id) throw refuse(name, `it was attached for another project than ${body.project_id}`, { project_id: body.project_id });
        return await eraseHeld(name, body, record, peer, started);
      });
    } catch (err) {
      reportOutcome(deps, 'detach', name, codeOf(err), started, { ephemeral: true, erase: true });
      throw err;
    }
  }

  return { erase };
}
