import { createHash } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { resolveProvider } from '../../luks/providers/index.js';
import { keyError } from '../../keyclient/errors.js';
import { canonicalKeyId } from '../../keyclient/key-id.js';
import type { KeyedLock } from '../../util/keyed-lock.js';
import { daemonError } from '../errors.js';
import type { AttachAnswer, DetachAnswer, EphemeralAttachBody, EphemeralDetachBody } from '../../api/wire.js';
import type { Peer } from '../api/peer.js';
import { attachPipeline, type KeyChoice, type KeyQuestion, type KeyStrategy } from './attach-pipeline.js';
import { closeHeld } from './close-mapping.js';
import { eraseService } from './erase.js';
import { lockKey } from './lock-keys.js';
import { consumersOf } from './consumers.js';
import { codeOf, elapsed, keyContext, reportOutcome, checkBackend, type ServiceDeps } from './context.js';
import type { VolumeRecord } from '../volume-registry.js';

/** Ephemeral disks: encrypted scratch disks that live and die with an instance. */
export interface EphemeralService {
  attach(instance: string, disk: string, body: EphemeralAttachBody, peer: Peer, signal?: AbortSignal): Promise<AttachAnswer>;
  detach(instance: string, disk: string, erase: boolean, body: EphemeralDetachBody | undefined, peer: Peer): Promise<DetachAnswer>;
}

/** dm names are at most 127 bytes. */
const MAX_NAME = 127;

/**
 * The mapping name of an instance's disk, injective: ids never contain "+"
 * (the API's id pattern), so "ephemeral-a-b+c" and "ephemeral-a+b-c" are two
 * disks. A pair too long for dm's 127 bytes is named by a hash of both ids
 * (no "+" in it, so it cannot collide with a readable name).
 */
export function ephemeralMappingName(instance: string, disk: string): string {
  const readable = `ephemeral-${instance}+${disk}`;
  if (readable.length <= MAX_NAME) return readable;
  return `ephemeral-h-${createHash('sha256').update(`${instance}\0${disk}`).digest('hex')}`;
}

/**
 * Keys are found again by name in the backend, so a daemon restart (or
 * another host, with Barbican) finds the same key: one per project, or one per
 * instance disk.
 */
export function ephemeralKeyName(scope: 'instance' | 'project', projectId: string, instance: string, disk: string): string {
  return scope === 'project' ? `portcullis-ephemeral-project:${projectId}` : `portcullis-ephemeral:${instance}/${disk}`;
}

/**
 * The first attach creates the key (instance scope) or finds the project's
 * and formats the blank disk as LUKS2 with a token naming disk, project and
 * key; later attaches open it with the key its record or its token names.
 * An erase (erase.ts) wipes the keyslots and deletes a key created for the
 * disk: crypto-erase.
 */
export function ephemeralService(deps: ServiceDeps, locks: KeyedLock): EphemeralService {
  const pipeline = attachPipeline(deps, locks);
  const erasing = eraseService(deps, locks);

  /**
   * The disk's own key: the one its record names (the same project's), else
   * its header token's, else the request's, else found by name (one, never a
   * guess among several), else created when the disk is blank.
   * @throws E_MAPPING_CONFLICT, E_KEY_AMBIGUOUS, E_KEY_NOT_FOUND
   */
  function diskKey(name: string, body: EphemeralAttachBody, keyName: string): KeyStrategy {
    return {
      kind: 'disk',
      locks: [lockKey.ephemeralKey(body.project_id, keyName)],
      async choose(q: KeyQuestion, peer: Peer): Promise<KeyChoice> {
        const token = q.header?.token?.name === name && q.header.token.project_id === body.project_id ? q.header.token : undefined;
        const recorded = q.previous?.projectId === body.project_id && q.previous.keyId !== null ? q.previous.keyId : token?.key_id;
        const given = body.key === undefined ? undefined : canonicalKeyId(body.key.id);
        if (recorded !== undefined) {
          if (given !== undefined && given !== recorded) {
            throw daemonError('E_MAPPING_CONFLICT', `Ephemeral disk ${name} was made with key ${recorded}, not ${given}; refusing (the disk's key never changes)`, { details: { name, differs: ['key_id'] } });
          }
          return { keyId: recorded, created: false };
        }
        if (given !== undefined) return { keyId: given, created: false };
        const found = (await deps.keys().list(q.ctx, { name: keyName, type: 'symmetric' })).filter((o) => o.id !== undefined);
        if (found.length > 1) {
          throw daemonError('E_KEY_AMBIGUOUS', `${found.length} keys are named ${keyName} in project ${body.project_id}; refusing to guess which one encrypts ${name}. Name it with key.id, or delete the stray key`, {
            details: { key_name: keyName, key_ids: found.map((o) => o.id ?? '') },
          });
        }
        const only = found[0]?.id;
        if (only !== undefined) return { keyId: only, created: false };
        if (q.header !== undefined) {
          // A formatted disk whose key is gone was erased: a fresh key would only fail to open it.
          throw keyError('E_KEY_NOT_FOUND', `No key named ${keyName} in project ${body.project_id} for the already formatted disk ${body.device} (was it erased?)`, {
            details: { key_name: keyName, device: body.device },
          });
        }
        q.ctx.signal?.throwIfAborted();
        const keyId = await deps.keys().createKey(q.ctx, { algorithm: 'aes', length: body.key_size ?? deps.luks().key_size, name: keyName });
        deps.log.audit('key_access', { op: 'create', purpose: `ephemeral ${name}`, project_id: body.project_id, key_id: keyId, key_scope: body.key_scope, outcome: 'ok', peer_uid: peer.uid, peer_pid: peer.pid });
        return { keyId, created: true };
      },
    };
  }

  /**
   * The scope a key was created with, and whether it was created for this
   * disk, are facts of its creation: taken from the record or the header
   * token when the disk has either, never from a later request.
   */
  function creation(previous: VolumeRecord | undefined, choice: KeyChoice, body: EphemeralAttachBody, token: { key_scope: 'instance' | 'project'; key_created: boolean } | undefined): Pick<VolumeRecord, 'keyScope' | 'keyCreated'> {
    if (previous?.keyScope !== undefined && previous.projectId === body.project_id) return { keyScope: previous.keyScope, ...(previous.keyCreated === true ? { keyCreated: true } : {}) };
    if (token !== undefined) return { keyScope: token.key_scope, ...(token.key_created ? { keyCreated: true } : {}) };
    return { keyScope: body.key_scope, ...(choice.created ? { keyCreated: true } : {}) };
  }

  async function attach(instance: string, disk: string, body: EphemeralAttachBody, peer: Peer, signal?: AbortSignal): Promise<AttachAnswer> {
    const started = performance.now();
    const name = ephemeralMappingName(instance, disk);
    const provider = resolveProvider(body.provider);
    if (provider !== 'luks2') {
      throw daemonError('E_BAD_REQUEST', `An ephemeral disk is LUKS2: its header carries the token that proves the disk before an erase; provider "${body.provider}" is refused`, { details: { provider: body.provider } });
    }
    checkBackend(deps, body.key?.backend);
    const keyName = ephemeralKeyName(body.key_scope, body.project_id, instance, disk);
    let keyId: string | null = body.key?.id ?? null;
    const ctx = keyContext(body.project_id, body.auth?.token, signal);
    try {
      const outcome = await pipeline.run(
        {
          name, device: body.device, symlink: false, provider, format: 'if-blank', cipher: body.cipher, keySize: body.key_size,
          readOnly: body.read_only, allowDiscards: body.allow_discards, projectId: body.project_id,
          ctx, purpose: `ephemeral attach ${name}`, key: diskKey(name, body, keyName),
          record: (base, choice, previous) => ({
            origin: previous?.origin ?? 'attached', device: base.device.path, rdev: base.device.rdev, projectId: body.project_id, keyId: base.keyId,
            ...creation(previous, choice, body, base.token?.name === name && base.token.project_id === body.project_id ? base.token : undefined),
            ...(base.luksUuid === undefined ? {} : { luksUuid: base.luksUuid }),
          }),
          token: (choice) => ({ name, project_id: body.project_id, key_id: choice.keyId, key_scope: body.key_scope, key_created: choice.created }),
        },
        peer,
        signal,
      );
      keyId = outcome.keyId;
      await consumersOf(deps).attached(ctx, outcome.keyId, name);
      outcome.timings.total = elapsed(started);
      const scope = deps.registry.get(name)?.keyScope ?? body.key_scope;
      const answer: AttachAnswer = {
        name, mapper_path: `/dev/mapper/${name}`, device: outcome.status?.device ?? outcome.pinned.path, provider, luks_uuid: outcome.uuid,
        size_bytes: outcome.status?.sizeSectors === undefined ? null : outcome.status.sizeSectors * 512, key_id: outcome.keyId, key_source: outcome.source,
        opened: outcome.opened, formatted: outcome.formatted, keyslot_upgraded: outcome.keyslotUpgraded, key_scope: scope, timings_ms: outcome.timings,
      };
      reportOutcome(deps, 'attach', name, 'ok', started, { ephemeral: true, project_id: body.project_id, key_id: keyId, key_scope: scope, key_source: outcome.source, device: body.device, formatted: answer.formatted, timings_ms: answer.timings_ms });
      return answer;
    } catch (err) {
      reportOutcome(deps, 'attach', name, codeOf(err), started, { ephemeral: true, project_id: body.project_id, key_id: keyId, key_scope: body.key_scope, device: body.device });
      throw err;
    }
  }

  async function detach(instance: string, disk: string, doErase: boolean, body: EphemeralDetachBody | undefined, peer: Peer): Promise<DetachAnswer> {
    const name = ephemeralMappingName(instance, disk);
    if (doErase) {
      if (body === undefined) throw daemonError('E_BAD_REQUEST', 'erase=true needs a JSON body with project_id (whose instance key to delete)', { details: { name } });
      return erasing.erase(name, body, peer);
    }
    // Detach keeps the disk's record (marked detached), so that a later erase knows its device and key.
    const started = performance.now();
    try {
      const answer = await locks.with([lockKey.mapping(name)], () => closeHeld(deps, name, { deferred: false }));
      answer.timings_ms.total = elapsed(started);
      reportOutcome(deps, 'detach', name, 'ok', started, { ephemeral: true, closed: answer.closed });
      return answer;
    } catch (err) {
      reportOutcome(deps, 'detach', name, codeOf(err), started, { ephemeral: true });
      throw err;
    }
  }

  return { attach, detach };
}
