import { performance } from 'node:perf_hooks';
import { resolveProvider } from '../../luks/providers/index.js';
import { keyError } from '../../keyclient/errors.js';
import type { RequestContext } from '../../keyclient/key-manager.js';
import { killPoint } from './kill-point.js';
import { daemonError } from '../errors.js';
import type { AttachAnswer, DetachAnswer, EphemeralAttachBody, EphemeralDetachBody, KeySource } from '../api/wire.js';
import { checkBackend, codeOf, elapsed, fetchKey, keyContext, type ServiceDeps } from './context.js';
import type { Peer } from '../api/peer.js';
import { eraseTarget } from './ownership.js';
import type { VolumeService } from './volumes.js';

/** dm names are at most 127 bytes; "ephemeral-" + instance + "-" + disk must fit. */
const MAX_NAME = 127;

export function ephemeralMappingName(instance: string, disk: string): string {
  const name = `ephemeral-${instance}-${disk}`;
  if (name.length > MAX_NAME) {
    throw daemonError('E_BAD_REQUEST', `Instance and disk ids are too long together (mapping name ${name.length} > ${MAX_NAME} bytes)`, { details: { instance, disk } });
  }
  return name;
}

/**
 * Keys are found again by name in the backend, so a daemon restart (or
 * another host, with Barbican) finds the same key: one per project, or one per
 * instance disk.
 */
export function ephemeralKeyName(scope: 'instance' | 'project', projectId: string, instance: string, disk: string): string {
  return scope === 'project' ? `portcullis-ephemeral-project:${projectId}` : `portcullis-ephemeral:${instance}/${disk}`;
}

export type EphemeralService = ReturnType<typeof ephemeralService>;

/**
 * Ephemeral disks: encrypted scratch disks that live and die with an
 * instance. The first attach creates the key (instance scope) or reuses the
 * project's, and formats the blank disk; later attaches open it; an erase
 * wipes the keyslots and deletes an instance key: crypto-erase.
 */
export function ephemeralService(deps: ServiceDeps, volumes: VolumeService) {
  async function findKey(ctx: RequestContext, name: string): Promise<string | undefined> {
    const found = await deps.keys().list(ctx, { name, type: 'symmetric' });
    // The oldest wins if a race ever made two: every host then agrees on the same one.
    const sorted = found.filter((o) => o.id !== undefined).sort((a, b) => (a.created?.getTime() ?? 0) - (b.created?.getTime() ?? 0));
    return sorted[0]?.id;
  }

  async function attach(instance: string, disk: string, body: EphemeralAttachBody, peer: Peer, signal?: AbortSignal): Promise<AttachAnswer> {
    const started = performance.now();
    const name = ephemeralMappingName(instance, disk);
    const provider = resolveProvider(body.provider);
    if (provider === 'nop') throw daemonError('E_BAD_REQUEST', 'An ephemeral disk must be encrypted: provider "nop" is refused', { details: { provider: body.provider } });
    checkBackend(deps, body.key?.backend);
    const ctx = keyContext(body.project_id, body.auth?.token, signal);
    const keyName = ephemeralKeyName(body.key_scope, body.project_id, instance, disk);
    const timings = { key: 0, format: 0, open: 0, total: 0 };
    let keyId: string | undefined = body.key?.id;
    let source: KeySource | null = null;
    try {
      // The project lock keeps two first attaches of one project from creating two project keys.
      const lockKeys = [`dev:${body.device}`, `map:${name}`, `ephemeral-key:${body.project_id}:${keyName}`];
      const answer = await volumes.locks.with(lockKeys, async (): Promise<AttachAnswer> => {
        const pinned = await deps.driver.identify(body.device);
        // The path lock serialises requests naming the disk one way; this one, every way.
        return volumes.locks.with([`rdev:${pinned.rdev}`], async (): Promise<AttachAnswer> => {
          const t = performance.now();
          keyId ??= await findKey(ctx, keyName);
          const wish = { projectId: body.project_id, keyId: keyId ?? '', provider, readOnly: body.read_only };
          const existing = await volumes.existingFor(name, wish);
          let created = false;
          if (keyId === undefined) {
            const isLuksType = provider === 'luks' || provider === 'luks2';
            if (isLuksType && (await deps.driver.isLuks(pinned))) {
              // A formatted disk whose key is gone was erased: a fresh key would only fail to open it.
              throw keyError('E_KEY_NOT_FOUND', `No key named ${keyName} in project ${body.project_id} for the already formatted disk ${body.device} (was it erased?)`, {
                details: { key_name: keyName, device: body.device },
              });
            }
            signal?.throwIfAborted();
            keyId = await deps.keys().createKey(ctx, { algorithm: 'aes', length: body.key_size ?? deps.luks().key_size, name: keyName });
            created = true;
            deps.log.audit('key_access', { op: 'create', purpose: `ephemeral ${name}`, project_id: body.project_id, key_id: keyId, key_scope: body.key_scope, outcome: 'ok', peer_uid: peer.uid, peer_pid: peer.pid });
          }
          const fetched = await fetchKey(deps, ctx, keyId, peer, `ephemeral attach ${name}`);
          source = created ? 'created' : fetched.source;
          timings.key = elapsed(t);
          try {
            if (existing !== undefined) await volumes.claimUnowned(name, existing, { ...wish, keyId }, fetched.object);
            const previous = deps.registry.get(name);
            // Only a key portcullis created for this disk may die with it; the mark survives detach and reattach.
            const keyCreated = created || (previous?.keyCreated === true && previous.keyId === keyId && previous.projectId === body.project_id);
            const record = { origin: previous?.origin ?? 'attached', device: pinned.path, rdev: pinned.rdev, projectId: body.project_id, keyId, keyScope: body.key_scope, ...(keyCreated ? { keyCreated } : {}) } as const;
            const result = await volumes.withIntent(name, existing === undefined ? record : undefined, () =>
              volumes.openWithKey(
                { name, device: pinned, provider, format: 'if-blank', cipher: body.cipher, keySize: body.key_size, readOnly: body.read_only, allowDiscards: body.allow_discards },
                fetched.object,
                timings,
                existing?.status,
                signal,
              ),
            );
            killPoint('attach:opened');
            deps.registry.set(name, record);
            return {
              name,
              mapper_path: `/dev/mapper/${name}`,
              device: result.status?.device ?? pinned.path,
              provider,
              luks_uuid: result.uuid,
              size_bytes: result.status?.sizeSectors === undefined ? null : result.status.sizeSectors * 512,
              key_id: keyId,
              key_source: source,
              opened: result.opened,
              formatted: result.formatted,
              keyslot_upgraded: result.keyslotUpgraded,
              key_scope: body.key_scope,
              timings_ms: timings,
            };
          } finally {
            fetched.object.zeroize();
          }
        });
      });
      answer.timings_ms.total = elapsed(started);
      volumes.finished('attach', name, 'ok', started, { ephemeral: true, project_id: body.project_id, key_id: keyId ?? null, key_scope: body.key_scope, key_source: source, device: body.device, formatted: answer.formatted, timings_ms: answer.timings_ms });
      return answer;
    } catch (err) {
      volumes.finished('attach', name, codeOf(err), started, { ephemeral: true, project_id: body.project_id, key_id: keyId ?? null, key_scope: body.key_scope, device: body.device });
      throw err;
    }
  }

  /** Detach keeps the disk's record (marked detached), so that a later erase knows its device and key. */
  function detachOnly(name: string): Promise<DetachAnswer> {
    return volumes.detach(name, { deferred: false, keepRecord: true });
  }

  /**
   * Crypto-erase, on nothing but what the record names: its device (never one
   * from the body), and the instance key portcullis created for the disk.
   * Runs under the same device and mapping locks as attach.
   */
  async function erase(name: string, body: EphemeralDetachBody, peer: Peer): Promise<DetachAnswer> {
    const started = performance.now();
    const record = deps.registry.get(name);
    if (record !== undefined && record.keyScope === undefined) {
      throw daemonError('E_ERASE_REFUSED', `Refusing to erase ${name}: it is a volume, not an ephemeral disk; nothing was erased`, { details: { name } });
    }
    // A device named in the body counts only as the recorded one; one that is not there is not it.
    const named = body.device === undefined ? undefined : await deps.driver.identify(body.device).catch(() => ({ path: body.device ?? '', rdev: 'none' }));
    const target = eraseTarget(name, record, { projectId: body.project_id, device: named, keyId: body.key?.id });
    const ctx = keyContext(body.project_id, body.auth?.token);
    const path = typeof target.device === 'string' ? target.device : target.device.path;
    const lockKeys = [`dev:${path}`, `map:${name}`, ...(typeof target.device === 'string' ? [] : [`rdev:${target.device.rdev}`])];
    return volumes.locks.with(lockKeys, async () => {
      if (deps.registry.get(name) !== record) {
        throw daemonError('E_ERASE_REFUSED', `Ephemeral disk ${name} changed while this erase waited for it; nothing was erased, retry`, { details: { name } });
      }
      // The record stays until the erase is done: a crash midway leaves a disk a retried erase still knows.
      const detached = await volumes.closeHeld(name, { deferred: false, keepRecord: true });
      killPoint('erase:closed');
      let erased = false;
      if (await deps.driver.isLuks(target.device)) {
        await deps.driver.eraseKeyslots(target.device);
        erased = true;
      }
      killPoint('erase:erased');
      let keyDeleted = false;
      if (target.keyId !== undefined && deps.keys().capabilities.deletes) {
        try {
          await deps.keys().delete(ctx, target.keyId);
        } catch (err) {
          // Already gone (an earlier erase whose answer was lost) is what erase wants.
          if (codeOf(err) !== 'E_KEY_NOT_FOUND') throw err;
        }
        keyDeleted = true;
        deps.log.audit('key_access', { op: 'delete', purpose: `ephemeral erase ${name}`, project_id: body.project_id, key_id: target.keyId, outcome: 'ok', peer_uid: peer.uid, peer_pid: peer.pid });
      }
      killPoint('erase:key-deleted');
      deps.registry.delete(name);
      // A plain disk has no keyslots: deleting its key is the erase.
      erased ||= keyDeleted;
      volumes.finished('detach', name, 'ok', started, { ephemeral: true, erase: true, erased, key_deleted: keyDeleted, key_id: target.keyId ?? null });
      return { ...detached, erased, key_deleted: keyDeleted, timings_ms: { total: elapsed(started) } };
    });
  }

  async function detach(instance: string, disk: string, doErase: boolean, body: EphemeralDetachBody | undefined, peer: Peer): Promise<DetachAnswer> {
    const name = ephemeralMappingName(instance, disk);
    if (!doErase) return detachOnly(name);
    if (body === undefined) throw daemonError('E_BAD_REQUEST', 'erase=true needs a JSON body with project_id (whose instance key to delete)', { details: { name } });
    return erase(name, body, peer);
  }

  return { attach, detach };
}
