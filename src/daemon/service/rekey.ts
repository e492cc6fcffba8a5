import { performance } from 'node:perf_hooks';
import { keyslotKdfs, type DeviceIdentity, type LuksHeader, type SlotKey } from '../../luks/driver.js';
import { luksError } from '../../luks/errors.js';
import { canonicalKeyId } from '../../keyclient/key-id.js';
import type { ManagedObject } from '../../keyclient/objects/index.js';
import type { KeyedLock } from '../../util/keyed-lock.js';
import type { RekeyAnswer, RekeyBody } from '../../api/wire.js';
import type { Peer } from '../api/peer.js';
import { daemonError } from '../errors.js';
import type { VolumeRecord } from '../volume-registry.js';
import { isEphemeral } from './close-mapping.js';
import { checkBackend, codeOf, elapsed, fetchKey, keyContext, reportOutcome, type ServiceDeps } from './context.js';
import { killPoint } from './kill-point.js';
import { lockKey } from './lock-keys.js';
import { ownRecord } from './ownership.js';
import { consumersOf } from './consumers.js';
import { assertTokenNames, slotFacts } from './volume-facts.js';

/** The volume a rekey acts on: its device, pinned, its header, and whether its mapping is open (then its record). */
interface Target {
  pinned: DeviceIdentity;
  header: LuksHeader;
  /** The own mapping's record (online); undefined offline. */
  record: VolumeRecord | undefined;
}

const unsupported = (name: string, why: string) => daemonError('E_REKEY_UNSUPPORTED', `Cannot rekey ${name}: ${why}; nothing was changed`, { details: { name } });

/**
 * Key rotation of a LUKS volume (POST /v1/volumes/{name}/rekey): the keyslot
 * the current key opens is replaced by one for the new key. The volume key
 * never changes (no data is re-encrypted), so an open mapping stays open.
 * Three writes, each followed by a kill point, in an order that keeps the
 * volume openable at every instant: (1) add a keyslot for the new key and
 * prove the new key's bytes open it; (2) rewrite the LUKS2 token and the
 * daemon's record to name the new key; (3) destroy the old key's slot. A
 * retry after a crash at any point finds the slots the two keys open and
 * does only what is left.
 */
export function rekeyService(deps: ServiceDeps, locks: KeyedLock) {
  const { driver } = deps;

  /** The open own mapping, or the device the request names. @throws E_MAPPING_FOREIGN, E_MAPPING_CONFLICT, E_VOLUME_NOT_FOUND, E_DEVICE_BUSY, E_REKEY_UNSUPPORTED */
  async function locate(name: string, body: RekeyBody, ids: string[]): Promise<{ pinned: DeviceIdentity; record: VolumeRecord | undefined }> {
    const status = await driver.status(name);
    const named = body.device === undefined ? undefined : await driver.pinBacking(body.device);
    if (status !== undefined) {
      const record = ownRecord(name, deps.registry.get(name), 'rekey');
      if (isEphemeral(record)) throw unsupported(name, 'it is an ephemeral disk');
      if (record.projectId !== null && record.projectId !== body.project_id) {
        throw daemonError('E_MAPPING_CONFLICT', `Mapping ${name} was attached for another project; refusing to rekey it for ${body.project_id}`, { details: { name, differs: ['project_id'] } });
      }
      // The record carries the facts for LUKS1 (no token): a key it does not name is refused as the token would refuse it.
      if (record.keyId !== null && !ids.includes(record.keyId)) {
        throw daemonError('E_VOLUME_KEY_MISMATCH', `Mapping ${name} was attached with key ${record.keyId}, not ${ids.join(' or ')}; refusing before trying any key`, { details: { name, key_ids: ids, recorded_key_id: record.keyId } });
      }
      if (status.type !== undefined && status.type !== 'LUKS1' && status.type !== 'LUKS2') throw unsupported(name, `it is a ${status.type.toLowerCase()} mapping, which has no keyslots`);
      if (status.device === undefined || status.deviceRdev === undefined) throw unsupported(name, 'the kernel names no single backing device for it');
      if (named !== undefined && named.rdev !== status.deviceRdev) {
        throw daemonError('E_MAPPING_CONFLICT', `Mapping ${name} is open over ${status.device}, not ${body.device}; refusing`, { details: { name, differs: ['device'] } });
      }
      return { pinned: named ?? (await driver.identify(status.device)), record };
    }
    if (named === undefined) {
      throw daemonError('E_VOLUME_NOT_FOUND', `No crypt mapping named ${name} exists; to rekey a detached volume name its device`, { details: { name } });
    }
    if (isEphemeral(deps.registry.get(name))) throw unsupported(name, 'it is an ephemeral disk');
    const holders = await driver.holdersOf(named);
    if (holders.length > 0) {
      throw luksError('E_DEVICE_BUSY', `${named.path} is held by ${holders.join(', ')}, not by a mapping named ${name}; rekey it through its mapping's name`, { details: { device: named.path, holders } });
    }
    return { pinned: named, record: undefined };
  }

  /** Checks what the header says before any key is tried. */
  async function headerOf(name: string, body: RekeyBody, pinned: DeviceIdentity, oldId: string, newId: string): Promise<LuksHeader> {
    const header = await driver.header(pinned);
    if (header === undefined) throw unsupported(name, `${pinned.path} holds no LUKS header (a plain volume has no keyslots)`);
    if (header.token !== undefined) throw unsupported(name, 'it is an ephemeral disk');
    const token = header.volumeToken;
    if (token !== undefined && !Object.values(token.slots).some((s) => s.project_id === body.project_id)) {
      throw daemonError('E_MAPPING_CONFLICT', `${pinned.path} belongs to another project than ${body.project_id} (its portcullis token says so); refusing to rekey it`, { details: { name, differs: ['project_id'] } });
    }
    if (token !== undefined) assertTokenNames(name, token, [oldId, newId]);
    return header;
  }

  /** The three steps, or what is left of them. Keys are the caller's; it wipes them. */
  async function rotate(name: string, body: RekeyBody, target: Target, oldKey: ManagedObject, newKey: ManagedObject, ids: { oldId: string; newId: string }): Promise<{ slot: number; removed: number | null; changed: boolean; recordedIn: Array<'token' | 'record'> }> {
    const { pinned, header, record } = target;
    const active = keyslotKdfs(header.dump).map((s) => s.slot);
    const oldSlot = await driver.slotOpenedBy(pinned, oldKey.bytes());
    // One slot that the old key opens: the new key opens it only if it is the same bytes (no PBKDF run needed to know).
    const newSlot = active.length === 1 && oldSlot !== undefined ? (Buffer.compare(oldKey.bytes(), newKey.bytes()) === 0 ? oldSlot : undefined) : await driver.slotOpenedBy(pinned, newKey.bytes());
    const facts = { key_id: ids.newId, backend: deps.backend(), project_id: body.project_id } satisfies SlotKey;
    if (oldSlot === undefined) {
      const done = newSlot !== undefined && (header.volumeToken !== undefined ? header.volumeToken.slots[String(newSlot)]?.key_id === ids.newId : record?.keyId == null || record.keyId === ids.newId);
      if (!done) throw luksError('E_WRONG_KEY', `Key ${ids.oldId} opens no keyslot of ${pinned.path}; nothing was changed`, { details: { device: pinned.path, key_id: ids.oldId } });
      // A retry of a rekey that finished: make sure the facts say so, and answer.
      return { slot: newSlot, removed: null, changed: false, recordedIn: await writeFacts(name, target, facts, newSlot, undefined, active) };
    }
    let slot = newSlot;
    let changed = false;
    if (slot === undefined) {
      slot = await driver.addSlot(pinned, header.version, oldKey.bytes(), newKey.bytes(), pbkdfFor(deps, header.version));
      changed = true;
      killPoint('rekey:slot-added');
    }
    const kept = slot;
    const recordedIn = await writeFacts(name, target, facts, kept, oldSlot, [...active, kept]);
    killPoint('rekey:recorded');
    let removed: number | null = null;
    if (oldSlot !== kept) {
      await driver.removeSlot(pinned, oldSlot, kept);
      removed = oldSlot;
      changed = true;
      killPoint('rekey:slot-removed');
    }
    return { slot: kept, removed, changed, recordedIn };
  }

  /** The token (LUKS2) and the record (an open mapping) name `facts` for `slot` and forget `retired`; unchanged ones are not rewritten. */
  async function writeFacts(name: string, target: Target, facts: SlotKey, slot: number, retired: number | undefined, active: number[]): Promise<Array<'token' | 'record'>> {
    const { pinned, header, record } = target;
    const where: Array<'token' | 'record'> = [];
    const keep = (slots: Record<string, SlotKey> | undefined) => slotFacts(slots, active, retired, slot, facts);
    if (header.version === 2) {
      const token = header.volumeToken;
      const next = keep(token?.slots);
      if (JSON.stringify(next) !== JSON.stringify(token?.slots)) await driver.writeVolumeToken(pinned, next, token?.tokenId);
      where.push('token');
    }
    if (record !== undefined) {
      deps.registry.set(name, { ...record, keyId: facts.key_id, projectId: facts.project_id, keyslots: keep(record.keyslots) });
      where.push('record');
    }
    return where;
  }

  async function rekey(name: string, body: RekeyBody, peer: Peer, signal?: AbortSignal): Promise<RekeyAnswer> {
    const started = performance.now();
    const oldId = canonicalKeyId(body.key.id);
    const newId = canonicalKeyId(body.new_key.id);
    const logged = { project_id: body.project_id, key_id: oldId, new_key_id: newId, device: body.device ?? null };
    const audit = (outcome: string, more: Record<string, string | number | boolean | null> = {}) =>
      deps.log.audit('key_rekey', { name, ...logged, outcome, peer_uid: peer.uid, peer_pid: peer.pid, ...more });
    try {
      checkBackend(deps, body.key.backend);
      checkBackend(deps, body.new_key.backend);
      if (oldId === newId) throw daemonError('E_BAD_REQUEST', `key and new_key are the same key (${newId}); nothing to rekey`, { details: { key_id: newId } });
      const answer = await locks.with([lockKey.mapping(name), ...(body.device === undefined ? [] : [lockKey.devicePath(body.device)])], async () => {
        signal?.throwIfAborted();
        const { pinned, record } = await locate(name, body, [oldId, newId]);
        return locks.with([lockKey.device(pinned.rdev)], async () => {
          const header = await headerOf(name, body, pinned, oldId, newId);
          const ctx = keyContext(body.project_id, body.auth?.token, signal);
          const t = performance.now();
          const newKey = (await fetchKey(deps, ctx, newId, peer, `rekey ${name} (new key)`)).object;
          try {
            const oldKey = (await fetchKey(deps, ctx, oldId, peer, `rekey ${name} (current key)`)).object;
            try {
              const keys = elapsed(t);
              signal?.throwIfAborted();
              const done = await rotate(name, body, { pinned, header, record }, oldKey, newKey, { oldId, newId });
              const out: RekeyAnswer = {
                name, device: pinned.path, luks_version: header.version, online: record !== undefined, changed: done.changed, slot: done.slot,
                removed_slot: done.removed, recorded_in: done.recordedIn, key_id: newId, timings_ms: { keys, total: 0 },
              };
              return out;
            } finally {
              oldKey.zeroize();
            }
          } finally {
            newKey.zeroize();
          }
        });
      });
      if (answer.online) {
        // An attached volume now consumes the new secret, not the old one (Barbican consumers; best effort, logged there).
        await consumersOf(deps).attached(keyContext(body.project_id, body.auth?.token), newId, name);
        await consumersOf(deps).released(body.project_id, body.auth?.token, oldId, name);
      }
      answer.timings_ms.total = elapsed(started);
      audit('ok', { online: answer.online, changed: answer.changed, slot: answer.slot, removed_slot: answer.removed_slot, luks_version: answer.luks_version });
      reportOutcome(deps, 'rekey', name, 'ok', started, { ...logged, online: answer.online, changed: answer.changed, slot: answer.slot, removed_slot: answer.removed_slot });
      return answer;
    } catch (err) {
      audit(codeOf(err));
      reportOutcome(deps, 'rekey', name, codeOf(err), started, logged);
      throw err;
    }
  }

  return { rekey };
}

/** The PBKDF of a new keyslot: the configured one; LUKS1 knows only pbkdf2 (and at least its 1000 iterations). */
function pbkdfFor(deps: ServiceDeps, version: 1 | 2) {
  const luks = deps.luks();
  if (version === 1 && luks.pbkdf !== 'pbkdf2' && luks.pbkdf !== 'default') return { type: 'pbkdf2' as const, iterations: Math.max(1000, luks.pbkdf_iterations) };
  return { type: luks.pbkdf, iterations: luks.pbkdf_iterations };
}
