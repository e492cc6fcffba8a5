import { performance } from 'node:perf_hooks';
import type { DeviceIdentity, MappingStatus } from '../../luks/driver.js';
import { keyedLock } from '../../util/keyed-lock.js';
import { resolveProvider, type Provider } from '../../luks/providers/index.js';
import type { ManagedObject } from '../../keyclient/objects/index.js';
import { luksError } from '../../luks/errors.js';
import { daemonError } from '../errors.js';
import type { AttachAnswer, AttachBody, DetachAnswer, KeySource, ResizeBody, VolumeAnswer } from '../api/wire.js';
import { assertSameAttach, ownRecord, type AttachWish } from './ownership.js';
import { killPoint } from './kill-point.js';
import { checkBackend, codeOf, elapsed, fetchKey, keyContext, type ServiceDeps } from './context.js';
import type { Peer } from '../api/peer.js';
import type { VolumeRecord } from '../volume-registry.js';

/** What an attach needs once the key is known; shared by volumes and ephemeral disks. */
export interface OpenRequest {
  name: string;
  /** Pinned once per request: every step acts on this major:minor, checked again before a write. */
  device: DeviceIdentity;
  provider: Provider;
  format: 'never' | 'if-blank';
  cipher?: string | undefined;
  keySize?: number | undefined;
  readOnly: boolean;
  allowDiscards: boolean;
}

export type VolumeService = ReturnType<typeof volumeService>;

/**
 * Attach/detach orchestration for volumes: validate → key (cache) → format
 * only under the safe-format rule → open. Idempotent both ways; one lock per
 * device and per mapping name around the whole sequence, so two attaches
 * cannot both decide to format.
 */
export function volumeService(deps: ServiceDeps) {
  const locks = keyedLock();
  const { driver } = deps;

  /** Opens (formatting first when allowed and provably blank) with `key`; the caller owns and wipes it. */
  /**
   * Before an attach opens anything: the mapping the kernel already has under this name, if any, after checking that it is
   * portcullis' own and was made for this same request (ownership.ts).
   * @throws E_MAPPING_FOREIGN, E_MAPPING_CONFLICT
   */
  async function existingFor(name: string, wish: AttachWish): Promise<{ status: MappingStatus; record: VolumeRecord } | undefined> {
    const status = await driver.status(name);
    if (status === undefined) return undefined;
    const record = ownRecord(name, deps.registry.get(name), 'attach over');
    assertSameAttach(name, record, status, wish);
    return { status, record };
  }

  /**
   * A record without owners (adopted from an old volumes file) is claimed
   * only by a key that opens the mapping's LUKS header.
   * @throws E_MAPPING_CONFLICT
   */
  async function claimUnowned(name: string, existing: { status: MappingStatus; record: VolumeRecord }, wish: AttachWish, key: ManagedObject): Promise<void> {
    const { status, record } = existing;
    if (record.projectId !== null && record.keyId !== null) return;
    const proven = wish.provider !== 'plain' && status.device !== undefined && (await driver.verifyKey(status.device, key.bytes()));
    if (!proven) {
      throw luksError('E_MAPPING_CONFLICT', `Mapping ${name} has no recorded owner and this key does not open its header; refusing to answer it for this request`, {
        details: { name, differs: ['key_id'] },
      });
    }
    deps.registry.set(name, { ...record, projectId: wish.projectId, keyId: wish.keyId });
  }

  async function openWithKey(req: OpenRequest, key: ManagedObject, timings: AttachAnswer['timings_ms'], existing: MappingStatus | undefined, signal?: AbortSignal): Promise<{ opened: boolean; formatted: boolean; keyslotUpgraded: boolean; status: MappingStatus | undefined; uuid: string | null }> {
    const luks = deps.luks();
    const isLuksType = req.provider === 'luks' || req.provider === 'luks2';
    let formatted = false;
    if (isLuksType && existing === undefined && !(await driver.isLuks(req.device))) {
      if (req.format !== 'if-blank') {
        throw luksError('E_DEVICE_WRONG', `Device ${req.device.path} holds no LUKS header and format is "never"; pass format "if-blank" to format a blank device`, {
          details: { device: req.device.path },
        });
      }
      signal?.throwIfAborted();
      const t = performance.now();
      await driver.format(req.device, key.bytes(), {
        type: req.provider === 'luks' ? 'luks' : 'luks2',
        cipher: req.cipher ?? luks.cipher,
        keySize: req.keySize ?? luks.key_size,
        pbkdf: { type: luks.pbkdf, iterations: luks.pbkdf_iterations },
        signal,
      });
      timings.format = elapsed(t);
      formatted = true;
      killPoint('attach:formatted');
    }
    signal?.throwIfAborted();
    const t = performance.now();
    const opened = await driver.open(req.device, req.name, key.bytes(), {
      type: req.provider === 'luks2' ? 'luks2' : req.provider === 'plain' ? 'plain' : 'luks',
      readOnly: req.readOnly,
      allowDiscards: req.allowDiscards,
      perfNoWorkqueue: luks.perf_no_workqueue,
      signal,
      ...(req.provider === 'plain' ? { cipher: req.cipher ?? luks.cipher, keySize: req.keySize ?? luks.key_size } : {}),
    });
    timings.open = elapsed(t);
    if (opened.legacyPassphrase) deps.log.warn('legacy os-brick passphrase opened the volume', { name: req.name, device: req.device.path });
    if (opened.removedHalfCreated) deps.log.warn('removed a half-created mapping of this name (an earlier open was killed midway) before opening', { name: req.name, device: req.device.path });
    const keyslotUpgraded = isLuksType && opened.opened && !formatted && luks.upgrade_keyslots ? await upgradeKeyslot(req, key, opened.legacyPassphrase) : false;
    return { opened: opened.opened, formatted, keyslotUpgraded, status: opened.status, uuid: opened.uuid };
  }

  /**
   * The volume is open, so the key is right: rewriting its slot now makes every
   * later open fast. A failure leaves the volume as it was (cryptsetup writes
   * the new slot before retiring the old) and never fails the attach.
   */
  async function upgradeKeyslot(req: OpenRequest, key: ManagedObject, legacyPassphrase: boolean): Promise<boolean> {
    const luks = deps.luks();
    try {
      const result = await driver.upgradeKeyslot(req.device, key.bytes(), { pbkdf: { type: luks.pbkdf, iterations: luks.pbkdf_iterations }, legacyPassphrase });
      if (result.upgraded) deps.log.info('keyslot rewritten to the fast PBKDF', { name: req.name, device: req.device.path, from: result.from, to: result.to });
      return result.upgraded;
    } catch (err) {
      deps.log.warn('keyslot upgrade failed; the volume is attached and unchanged', { name: req.name, device: req.device.path, error: codeOf(err) });
      return false;
    }
  }

  async function attach(name: string, body: AttachBody, peer: Peer, signal?: AbortSignal): Promise<AttachAnswer> {
    const started = performance.now();
    const provider = resolveProvider(body.provider);
    checkBackend(deps, body.key.backend);
    const timings = { key: 0, format: 0, open: 0, total: 0 };
    let keySource: KeySource | null = null;
    try {
      const answer = await locks.with([`dev:${body.device}`, `map:${name}`], async (): Promise<AttachAnswer> => {
        // Queued behind another request past this one's deadline: its caller has had E_REQUEST_TIMEOUT, do nothing.
        signal?.throwIfAborted();
        if (provider === 'nop') {
          // os-brick's NoOpEncryptor: the volume is not encrypted; the agent uses the device itself,
          // which must then be a block device: a 200 for /dev/null or a dangling path would send the guest nowhere.
          await driver.identify(body.device);
          return { name, mapper_path: body.device, device: body.device, provider, luks_uuid: null, size_bytes: null, key_id: null, key_source: null, opened: false, formatted: false, keyslot_upgraded: false, timings_ms: timings };
        }
        const device = body.symlink ? await driver.deviceBehindSymlink(name, body.device) : body.device;
        const t = performance.now();
        // The key first: whether this project may use it at all is the first question, for any mapping state.
        const { object: key, source } = await fetchKey(deps, keyContext(body.project_id, body.auth?.token, signal), body.key.id, peer, `attach ${name}`);
        keySource = source;
        timings.key = elapsed(t);
        killPoint('attach:key-fetched');
        try {
          const pinned = await driver.identify(device);
          // The path lock serialises requests naming the device one way; this one, every way (/dev/mapper/x, /dev/dm-3).
          const result = await locks.with([`rdev:${pinned.rdev}`], async () => {
            const wish: AttachWish = { projectId: body.project_id, keyId: body.key.id, provider, readOnly: body.read_only };
            const existing = await existingFor(name, wish);
            const req: OpenRequest = { name, device: pinned, provider, format: body.format, cipher: body.cipher, keySize: body.key_size, readOnly: body.read_only, allowDiscards: body.allow_discards };
            if (existing !== undefined) await claimUnowned(name, existing, wish, key);
            const record: VolumeRecord = { origin: 'attached', device: pinned.path, rdev: pinned.rdev, projectId: body.project_id, keyId: body.key.id };
            // Recorded before the mapping exists: a daemon killed between the open and its answer finds its
            // own mapping on restart (adopted) instead of a foreign one that blocks the agent's retry.
            const opened = await withIntent(name, existing === undefined ? record : undefined, () => openWithKey(req, key, timings, existing?.status, signal));
            killPoint('attach:opened');
            // An idempotent answer keeps the record it was checked against (and its origin).
            if (opened.opened) deps.registry.set(name, record);
            return opened;
          });
          if (body.symlink) await replaceSymlink(body.device, name);
          return {
            name,
            mapper_path: `/dev/mapper/${name}`,
            device: result.status?.device ?? pinned.path,
            provider,
            luks_uuid: result.uuid,
            size_bytes: sizeOf(result.status),
            key_id: body.key.id,
            key_source: source,
            opened: result.opened,
            formatted: result.formatted,
            keyslot_upgraded: result.keyslotUpgraded,
            timings_ms: timings,
          };
        } finally {
          key.zeroize();
        }
      });
      answer.timings_ms.total = elapsed(started);
      finished('attach', name, 'ok', started, { project_id: body.project_id, key_id: body.key.id, device: body.device, provider, key_source: keySource, opened: answer.opened, formatted: answer.formatted, keyslot_upgraded: answer.keyslot_upgraded, timings_ms: answer.timings_ms });
      return answer;
    } catch (err) {
      timings.total = elapsed(started);
      finished('attach', name, codeOf(err), started, { project_id: body.project_id, key_id: body.key.id, device: body.device, provider, key_source: keySource, timings_ms: timings });
      throw err;
    }
  }

  /**
   * Runs an open with `intent` recorded first (none: nothing to record); a
   * failed open puts the record back as it was.
   */
  async function withIntent<T>(name: string, intent: VolumeRecord | undefined, open: () => Promise<T>): Promise<T> {
    if (intent === undefined) return open();
    const previous = deps.registry.get(name);
    deps.registry.set(name, intent);
    killPoint('attach:recorded');
    try {
      return await open();
    } catch (err) {
      if (previous === undefined) deps.registry.delete(name);
      else deps.registry.set(name, previous);
      throw err;
    }
  }

  async function replaceSymlink(link: string, name: string): Promise<void> {
    const failed = await driver.pointSymlink(link, name);
    if (failed !== undefined) deps.log.warn('could not point the device symlink at the mapping, ignoring', { link, name, reason: failed });
  }

  /**
   * Detach for a caller that already holds the name's lock (attach, erase).
   * Idempotent: an absent mapping answers closed false.
   * @throws E_MAPPING_FOREIGN, E_VOLUME_BUSY
   */
  async function closeHeld(name: string, options: { deferred: boolean; keepRecord?: boolean }): Promise<DetachAnswer> {
    const status = await driver.status(name);
    if (status === undefined) {
      // Already gone is what detach wants: idempotent, as os-brick's close of an absent mapping.
      if (deps.registry.get(name)?.detached !== true && options.keepRecord !== true) deps.registry.delete(name);
      return { name, closed: false, deferred: false, timings_ms: { total: 0 } };
    }
    ownRecord(name, deps.registry.get(name), 'detach');
    // cryptsetup refuses a mapping in use itself: one process for the detach, the holder count only for the refusal.
    const closed = await driver.close(name, { deferred: options.deferred }).catch(async (err: unknown) => {
      if (codeOf(err) !== 'E_DEVICE_BUSY') throw err;
      const open = await driver.holders(name).catch(() => undefined);
      throw daemonError('E_VOLUME_BUSY', `Volume ${name} is held open${open === undefined ? '' : ` by ${open} holder(s)`} (mounted, or in use by a guest); refusing to detach. Release it first, or detach with ?deferred=true`, {
        details: { name, ...(open === undefined ? {} : { holders: open }) },
      });
    });
    killPoint('detach:closed');
    // A deferred close keeps the record until the kernel removes the mapping; list() prunes it then.
    // An ephemeral disk's record is kept (marked detached) for its erase: never deleted and written back,
    // which a crash in between would turn into a disk closed but forgotten, its key never deleted.
    const record = deps.registry.get(name);
    if (options.keepRecord === true && record !== undefined) deps.registry.set(name, { ...record, detached: true });
    else if (!closed.pending) deps.registry.delete(name);
    return { name, closed: true, deferred: closed.pending, timings_ms: { total: 0 } };
  }

  async function detach(name: string, options: { deferred: boolean; keepRecord?: boolean }): Promise<DetachAnswer> {
    const started = performance.now();
    try {
      const answer = await locks.with([`map:${name}`], () => closeHeld(name, options));
      answer.timings_ms.total = elapsed(started);
      finished('detach', name, 'ok', started, { closed: answer.closed, deferred: answer.deferred });
      return answer;
    } catch (err) {
      finished('detach', name, codeOf(err), started, {});
      throw err;
    }
  }

  async function resize(name: string, body: ResizeBody, peer: Peer): Promise<VolumeAnswer> {
    const started = performance.now();
    checkBackend(deps, body.key.backend);
    try {
      const answer = await locks.with([`map:${name}`], async () => {
        if ((await driver.status(name)) === undefined) throw notFound(name);
        const record = ownRecord(name, deps.registry.get(name), 'resize');
        if (record.projectId !== null && record.projectId !== body.project_id) {
          throw luksError('E_MAPPING_CONFLICT', `Mapping ${name} was attached for another project; refusing to resize it for ${body.project_id}`, { details: { name, differs: ['project_id'] } });
        }
        const { object: key } = await fetchKey(deps, keyContext(body.project_id, body.auth?.token), body.key.id, peer, `resize ${name}`);
        try {
          await driver.resize(name, key.bytes());
        } finally {
          key.zeroize();
        }
        return volume(name);
      });
      finished('resize', name, 'ok', started, { project_id: body.project_id, key_id: body.key.id, size_bytes: answer.size_bytes });
      return answer;
    } catch (err) {
      finished('resize', name, codeOf(err), started, { project_id: body.project_id, key_id: body.key.id });
      throw err;
    }
  }

  function finished(operation: 'attach' | 'detach' | 'resize', name: string, outcome: string, started: number, fields: Record<string, unknown>): void {
    const ms = performance.now() - started;
    deps.metrics.observe(operation, outcome, ms / 1000);
    const line = { name, outcome, ms: Math.round(ms), ...(fields as Record<string, string | number | boolean | null>) };
    if (outcome === 'ok') deps.log.info(operation, line);
    else deps.log.warn(operation, line);
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
    return answerOf(status);
  }

  return {
    attach,
    detach,
    closeHeld,
    resize,
    volume,
    existingFor,
    claimUnowned,
    openWithKey,
    locks,
    finished,
    withIntent,
    async list(view: { admin: boolean } = { admin: true }): Promise<VolumeAnswer[]> {
      const mappings = await driver.list();
      // Records of mappings the kernel no longer has (a deferred detach that completed) go.
      const live = new Set(mappings.map((m) => m.name));
      for (const name of deps.registry.names()) {
        if (!live.has(name) && deps.registry.get(name)?.detached !== true && !locks.held(`map:${name}`)) deps.registry.delete(name);
      }
      return mappings
        .filter((m) => visible(m.name, view.admin))
        .map(answerOf)
        .sort((a, b) => a.name.localeCompare(b.name));
    },
    /**
     * At start: the kernel's mappings that the saved records name (same name,
     * same device) become known again, so a restart neither loses nor
     * duplicates one. Every other crypt mapping is foreign and left alone.
     */
    async adopt(): Promise<{ adopted: number; foreign: number }> {
      const mappings = await driver.list();
      let adopted = 0;
      for (const m of mappings) {
        const saved = deps.registry.has(m.name) ? undefined : await deps.registry.saved(m.name, m.device, (path) => driver.identify(path).then((d) => d.rdev, () => undefined));
        if (saved !== undefined) {
          deps.registry.set(m.name, saved);
          adopted += 1;
        } else if (!deps.registry.has(m.name)) {
          deps.log.info('foreign crypt mapping, not adopted', { name: m.name, device: m.device ?? null });
        }
      }
      return { adopted, foreign: mappings.length - adopted };
    },
  };
}

function notFound(name: string) {
  return daemonError('E_VOLUME_NOT_FOUND', `No crypt mapping named ${name} exists`, { details: { name } });
}

function sizeOf(status: MappingStatus | undefined): number | null {
  return status?.sizeSectors === undefined ? null : status.sizeSectors * 512;
}
