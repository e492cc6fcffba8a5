import type { DetachAnswer } from '../../api/wire.js';
import { daemonError } from '../errors.js';
import type { VolumeRecord } from '../volume-registry.js';
import { codeOf, type ServiceDeps } from './context.js';
import { killPoint } from './kill-point.js';
import { ownRecord } from './ownership.js';
import { consumersOf } from './consumers.js';

/** An ephemeral disk's record: it outlives the mapping, for the disk's erase. */
export const isEphemeral = (record: VolumeRecord | undefined): boolean => record?.keyScope !== undefined;

/**
 * Detach for a caller that already holds the name's lock (detach, erase).
 * Idempotent: an absent mapping answers closed false. An ephemeral disk's
 * record is never dropped here, whichever route closes it: it is marked
 * detached, never deleted and written back (a crash in between would leave a
 * disk closed but forgotten, its key never deleted), and only an erase
 * removes it.
 * @throws E_MAPPING_FOREIGN, E_VOLUME_BUSY
 */
export async function closeHeld(deps: ServiceDeps, name: string, options: { deferred: boolean }): Promise<DetachAnswer> {
  const { driver, registry } = deps;
  const status = await driver.status(name);
  if (status === undefined) {
    // Already gone is what detach wants: idempotent, as os-brick's close of an absent mapping.
    await released(deps, name, settle(deps, name, false));
    return { name, closed: false, deferred: false, timings_ms: { total: 0 } };
  }
  ownRecord(name, registry.get(name), 'detach');
  // cryptsetup refuses a mapping in use itself: one process for the detach, the holder count only for the refusal.
  const closed = await driver.close(name, { deferred: options.deferred }).catch(async (err: unknown) => {
    if (codeOf(err) !== 'E_DEVICE_BUSY') throw err;
    const open = await driver.holders(name).catch(() => undefined);
    throw daemonError('E_VOLUME_BUSY', `Volume ${name} is held open${open === undefined ? '' : ` by ${open} holder(s)`} (mounted, or in use by a guest); refusing to detach. Release it first, or detach with ?deferred=true`, {
      details: { name, ...(open === undefined ? {} : { holders: open }) },
    });
  });
  killPoint('detach:closed');
  await released(deps, name, settle(deps, name, closed.pending));
  return { name, closed: true, deferred: closed.pending, timings_ms: { total: 0 } };
}

/**
 * After a close (or finding the mapping gone): a volume's record goes, an
 * ephemeral disk's is marked detached. A deferred close keeps the record
 * until the kernel removes the mapping; the volume list settles it then.
 * @returns the volume record it deleted, if it deleted one
 */
export function settle(deps: ServiceDeps, name: string, pending: boolean): VolumeRecord | undefined {
  const record = deps.registry.get(name);
  if (record === undefined || pending) return undefined;
  if (isEphemeral(record)) {
    if (record.detached !== true) deps.registry.set(name, { ...record, detached: true });
    return undefined;
  }
  deps.registry.delete(name);
  return record;
}

/** A volume's record is gone: so is its use of the key (an ephemeral disk's consumer goes at its erase). */
async function released(deps: ServiceDeps, name: string, record: VolumeRecord | undefined): Promise<void> {
  if (record?.projectId == null || record.keyId === null) return;
  await consumersOf(deps).released(record.projectId, undefined, record.keyId, name);
}
