import { performance } from 'node:perf_hooks';
import type { MappingStatus } from '../../luks/driver.js';
import { resolveProvider } from '../../luks/providers/index.js';
import { canonicalKeyId } from '../../keyclient/key-id.js';
import type { KeyedLock } from '../../util/keyed-lock.js';
import { daemonError } from '../errors.js';
import type { AttachAnswer, AttachBody, DetachAnswer, RekeyAnswer, RekeyBody, ResizeBody, VolumeAnswer } from '../../api/wire.js';
import type { Peer } from '../api/peer.js';
import { ownRecord } from './ownership.js';
import { attachPipeline, type KeyStrategy } from './attach-pipeline.js';
import { closeHeld, isEphemeral } from './close-mapping.js';
import { lockKey } from './lock-keys.js';
import { consumersOf } from './consumers.js';
import { rekeyService } from './rekey.js';
import { keyslotFactsOf } from './volume-facts.js';
import { checkBackend, codeOf, elapsed, fetchKey, keyContext, reportOutcome, type ServiceDeps } from './context.js';

/** Volumes: attach, detach, resize and the views of the kernel's crypt mappings. */
export interface VolumeService {
  attach(name: string, body: AttachBody, peer: Peer, signal?: AbortSignal): Promise<AttachAnswer>;
  detach(name: string, options: { deferred: boolean }): Promise<DetachAnswer>;
  resize(name: string, body: ResizeBody, peer: Peer): Promise<VolumeAnswer>;
  /** Replaces the keyslot of the current key by one for the new key (rekey.ts). */
  rekey(name: string, body: RekeyBody, peer: Peer, signal?: AbortSignal): Promise<RekeyAnswer>;
  volume(name: string, view?: { admin: boolean }): Promise<VolumeAnswer>;
  list(view?: { admin: boolean }): Promise<VolumeAnswer[]>;
  /** At start: the kernel's mappings that the saved records name become known again. */
  adopt(): Promise<{ adopted: number; foreign: number }>;
}

/** The key a volume names: never created, never guessed. */
const givenKey = (keyId: string): KeyStrategy => ({ kind: 'given', locks: [], key: { keyId, created: false } });

/**
 * Attach/detach orchestration for volumes: the attach pipeline with the key
 * the request names. Idempotent both ways; one lock per device and per
 * mapping name around the whole sequence, so two attaches cannot both
 * decide to format.
 */
export function volumeService(deps: ServiceDeps, locks: KeyedLock): VolumeService {
  const { driver } = deps;
  const pipeline = attachPipeline(deps, locks);
  const rekeying = rekeyService(deps, locks);

  async function attach(name: string, body: AttachBody, peer: Peer, signal?: AbortSignal): Promise<AttachAnswer> {
    const slotZero = (keyId: string) => ({ '0': { key_id: keyId, backend: deps.backend(), project_id: body.project_id } });
    const started = performance.now();
    const provider = resolveProvider(body.provider);
    checkBackend(deps, body.key.backend);
    const keyId = canonicalKeyId(body.key.id);
    const logged = { project_id: body.project_id, key_id: keyId, device: body.device, provider };
    try {
      if (provider === 'nop') {
        // os-brick's NoOpEncryptor: the volume is not encrypted; the agent uses the device itself,
        // which must then be a block device: a 200 for /dev/null or a dangling path would send the guest nowhere.
        await driver.identify(body.device);
        const timings = { key: 0, format: 0, open: 0, total: elapsed(started) };
        return { name, mapper_path: body.device, device: body.device, provider, luks_uuid: null, size_bytes: null, key_id: null, key_source: null, opened: false, formatted: false, keyslot_upgraded: false, timings_ms: timings };
      }
      const ctx = keyContext(body.project_id, body.auth?.token, signal);
      const outcome = await pipeline.run(
        {
          name, device: body.device, symlink: body.symlink, provider, format: body.format, cipher: body.cipher, keySize: body.key_size,
          readOnly: body.read_only, allowDiscards: body.allow_discards, projectId: body.project_id,
          ctx, purpose: `attach ${name}`, key: givenKey(keyId),
          // No header yet: this attach formats it, so its one keyslot (0) is this key's.
          record: (base) => ({ origin: 'attached', device: base.device.path, rdev: base.device.rdev, projectId: body.project_id, keyId: base.keyId, ...(base.luksUuid === undefined ? { keyslots: slotZero(base.keyId) } : { luksUuid: base.luksUuid }) }),
          volumeToken: (choice) => slotZero(choice.keyId),
        },
        peer,
        signal,
      );
      await consumersOf(deps).attached(ctx, keyId, name);
      outcome.timings.total = elapsed(started);
      const answer: AttachAnswer = {
        name, mapper_path: `/dev/mapper/${name}`, device: outcome.status?.device ?? outcome.pinned.path, provider, luks_uuid: outcome.uuid,
        size_bytes: sizeOf(outcome.status), key_id: body.key.id, key_source: outcome.source, opened: outcome.opened, formatted: outcome.formatted,
        keyslot_upgraded: outcome.keyslotUpgraded, timings_ms: outcome.timings,
      };
      reportOutcome(deps, 'attach', name, 'ok', started, { ...logged, key_source: outcome.source, opened: answer.opened, formatted: answer.formatted, keyslot_upgraded: answer.keyslot_upgraded, timings_ms: answer.timings_ms });
      return answer;
    } catch (err) {
      reportOutcome(deps, 'attach', name, codeOf(err), started, logged);
      throw err;
    }
  }

  async function detach(name: string, options: { deferred: boolean }): Promise<DetachAnswer> {
    const started = performance.now();
    try {
      const answer = await locks.with([lockKey.mapping(name)], () => closeHeld(deps, name, options));
      answer.timings_ms.total = elapsed(started);
      reportOutcome(deps, 'detach', name, 'ok', started, { closed: answer.closed, deferred: answer.deferred });
      return answer;
    } catch (err) {
      reportOutcome(deps, 'detach', name, codeOf(err), started, {});
      throw err;
    }
  }

  async function resize(name: string, body: ResizeBody, peer: Peer): Promise<VolumeAnswer> {
    const started = performance.now();
    checkBackend(deps, body.key.backend);
    try {
      const answer = await locks.with([lockKey.mapping(name)], async () => {
        if ((await driver.status(name)) === undefined) throw notFound(name);
        const record = ownRecord(name, deps.registry.get(name), 'resize');
        if (record.projectId !== null && record.projectId !== body.project_id) {
          throw daemonError('E_MAPPING_CONFLICT', `Mapping ${name} was attached for another project; refusing to resize it for ${body.project_id}`, { details: { name, differs: ['project_id'] } });
        }
        const { object: key } = await fetchKey(deps, keyContext(body.project_id, body.auth?.token), body.key.id, peer, `resize ${name}`);
        try {
          await driver.resize(name, key.bytes());
        } finally {
          key.zeroize();
        }
        return volume(name);
      });
      reportOutcome(deps, 'resize', name, 'ok', started, { project_id: body.project_id, key_id: body.key.id, size_bytes: answer.size_bytes });
      return answer;
    } catch (err) {
      reportOutcome(deps, 'resize', name, codeOf(err), started, { project_id: body.project_id, key_id: body.key.id });
      throw err;
    }
  }

  function answerOf(status: MappingStatus): VolumeAnswer {
    const record = deps.registry.get(status.name);
    return {
      name: status.name,
      mapper_path: status.mapperPath,
      device: status.device ?? null,
      type: status.type ?? null,
      cipher: status.cipher ?? null,
      key_size_bits: status.keySizeBits ?? null,
      size_bytes: sizeOf(status),
      read_only: status.readOnly,
      in_use: status.inUse,
      origin: record === undefined || record.detached === true ? 'foreign' : record.origin,
      project_id: record?.projectId ?? null,
      key_id: record?.keyId ?? null,
    };
  }

  /** Foreign mappings are shown to admins only: to an agent they do not exist. */
  const visible = (name: string, admin: boolean) => admin || (deps.registry.has(name) && deps.registry.get(name)?.detached !== true);

  async function volume(name: string, view: { admin: boolean } = { admin: true }): Promise<VolumeAnswer> {
    const status = await driver.describe(name);
    if (status === undefined || !visible(name, view.admin)) throw notFound(name);
    return { ...answerOf(status), ...keyslotFactsOf(await headerBehind(status), deps.registry.get(name), deps.backend()) };
  }

  /** The LUKS header behind a mapping, for its token's facts; none for plain, and a header that cannot be read only hides them. */
  async function headerBehind(status: MappingStatus) {
    if (status.device === undefined || (status.type !== undefined && status.type !== 'LUKS1' && status.type !== 'LUKS2')) return undefined;
    const device = status.device;
    return driver.identify(device).then((pinned) => driver.header(pinned)).catch(() => undefined);
  }

  async function list(view: { admin: boolean } = { admin: true }): Promise<VolumeAnswer[]> {
    const mappings = await driver.list();
    // Records of mappings the kernel no longer has (a deferred detach that completed) go; an ephemeral
    // disk's record stays, marked detached, for its erase.
    const live = new Set(mappings.map((m) => m.name));
    for (const name of deps.registry.names()) {
      const record = deps.registry.get(name);
      if (live.has(name) || record?.detached === true || locks.held(lockKey.mapping(name))) continue;
      if (isEphemeral(record) && record !== undefined) deps.registry.set(name, { ...record, detached: true });
      else {
        deps.registry.delete(name);
        // A deferred detach the kernel completed: the volume's consumer goes with its record, without holding up this list.
        if (record?.projectId != null && record.keyId !== null) void consumersOf(deps).released(record.projectId, undefined, record.keyId, name);
      }
    }
    return mappings
      .filter((m) => visible(m.name, view.admin))
      .map(answerOf)
      .sort((a, b) => a.name.localeCompare(b.name));
  }

  /**
   * At start: the kernel's mappings that the saved records name (same name,
   * same boot, same device) become known again, so a restart neither loses
   * nor duplicates one; an ephemeral disk's detached record becomes live
   * again when its mapping is there. Every other crypt mapping is foreign and
   * left alone.
   */
  async function adopt(): Promise<{ adopted: number; foreign: number }> {
    const mappings = await driver.list();
    let adopted = 0;
    for (const m of mappings) {
      const known = deps.registry.get(m.name);
      const saved = known !== undefined && known.detached !== true ? undefined : await deps.registry.saved(m.name, m.device, (path) => driver.identify(path).then((d) => d.rdev, () => undefined));
      if (saved !== undefined) {
        deps.registry.set(m.name, saved);
        adopted += 1;
      } else if (known === undefined || known.detached === true) {
        deps.log.info('foreign crypt mapping, not adopted', { name: m.name, device: m.device ?? null });
      }
    }
    return { adopted, foreign: mappings.length - adopted };
  }

  return { attach, detach, resize, rekey: rekeying.rekey, volume, list, adopt };
}

function notFound(name: string) {
  return daemonError('E_VOLUME_NOT_FOUND', `No crypt mapping named ${name} exists`, { details: { name } });
}

export function sizeOf(status: MappingStatus | undefined): number | null {
  return status?.sizeSectors === undefined ? null : status.sizeSectors * 512;
}
