import { performance } from 'node:perf_hooks';
import type { DeviceIdentity, DiskToken, LuksHeader, MappingStatus, SlotKey } from '../../luks/driver.js';
import type { Provider } from '../../luks/providers/index.js';
import type { RequestContext } from '../../keyclient/key-manager.js';
import type { ManagedObject } from '../../keyclient/objects/index.js';
import type { KeyedLock } from '../../util/keyed-lock.js';
import type { AttachAnswer, KeySource } from '../../api/wire.js';
import type { Peer } from '../api/peer.js';
import type { VolumeRecord } from '../volume-registry.js';
import { daemonError } from '../errors.js';
import { killPoint } from './kill-point.js';
import { lockKey } from './lock-keys.js';
import { assertSameAttach, ownRecord, type AttachWish } from './ownership.js';
import { elapsed, fetchKey, type ServiceDeps } from './context.js';
import { isLuksType, openWithKey, type Opened } from './open-volume.js';
import { assertTokenNames } from './volume-facts.js';

/** Which key an attach uses, and whether it was created for it. */
export interface KeyChoice {
  keyId: string;
  /** portcullis created this key for this attach (ephemeral first attach). */
  created: boolean;
}

/** What a key strategy sees: the pinned device, its header, and what the daemon recorded for the name. */
export interface KeyQuestion {
  ctx: RequestContext;
  pinned: DeviceIdentity;
  header: LuksHeader | undefined;
  previous: VolumeRecord | undefined;
}

/**
 * How an attach finds its key. `given`: the id the request names (volumes),
 * fetched before the device is even pinned, since whether the project may use
 * it at all is the first question, for any device and mapping state. `disk`:
 * the disk's own (recorded, in its header token, found by name, or created:
 * ephemeral disks), chosen under the request's locks with the device pinned.
 * `locks` are taken with the device path and mapping name, before the pin.
 */
export type KeyStrategy =
  | { readonly kind: 'given'; readonly locks: readonly string[]; readonly key: KeyChoice }
  | { readonly kind: 'disk'; readonly locks: readonly string[]; choose(question: KeyQuestion, peer: Peer): Promise<KeyChoice> };

/** One attach, as volumes and ephemeral disks both describe it. */
export interface AttachPlan {
  name: string;
  /** The device as the request named it. */
  device: string;
  /** os-brick style: `device` is the attachment's symlink; point it at the mapping afterwards. */
  symlink: boolean;
  provider: Exclude<Provider, 'nop'>;
  format: 'never' | 'if-blank';
  cipher?: string | undefined;
  keySize?: number | undefined;
  readOnly: boolean;
  allowDiscards: boolean;
  projectId: string;
  ctx: RequestContext;
  /** For the audit line ("attach vol-1", "ephemeral attach ephemeral-i+d"). */
  purpose: string;
  key: KeyStrategy;
  /** What to record for the mapping, from the device, the key chosen and the record before. */
  record(base: { device: DeviceIdentity; keyId: string; luksUuid: string | undefined; token: DiskToken | undefined }, choice: KeyChoice, previous: VolumeRecord | undefined): VolumeRecord;
  /** The token a format writes (LUKS2 ephemeral disks). */
  token?(choice: KeyChoice): DiskToken;
  /** The keyslot map a LUKS2 format writes as the volume's portcullis token (volumes). */
  volumeToken?(choice: KeyChoice): Record<string, SlotKey>;
}

interface FetchedKey {
  choice: KeyChoice;
  object: ManagedObject;
  source: KeySource;
}

export interface AttachOutcome extends Opened {
  pinned: DeviceIdentity;
  keyId: string;
  source: KeySource;
  timings: AttachAnswer['timings_ms'];
}

/**
 * The one attach sequence: lock (path, name) → pin the device (never a
 * crypt mapping) → lock it by major:minor → read its header → choose and
 * fetch the key → the existing mapping must be ours and the same request →
 * the key its header token names (volumes) → record the intent → format if
 * allowed and blank → open → record. Both
 * volumes and ephemeral disks run it; they differ only in their plan.
 */
export function attachPipeline(deps: ServiceDeps, locks: KeyedLock) {
  const { driver } = deps;

  /**
   * The mapping the kernel already has under this name, after checking that
   * it is portcullis' own and was made for this same request.
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
      throw daemonError('E_MAPPING_CONFLICT', `Mapping ${name} has no recorded owner and this key does not open its header; refusing to answer it for this request`, {
        details: { name, differs: ['key_id'] },
      });
    }
    deps.registry.set(name, { ...record, projectId: wish.projectId, keyId: wish.keyId });
  }

  /** Runs an open with `intent` recorded first (none: nothing to record); a failed open puts the record back as it was. */
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

  /** The chosen key, fetched through the cache and audited; the caller wipes it. `started`: when choosing began, for the timing. */
  async function fetchChosen(plan: AttachPlan, choice: KeyChoice, peer: Peer, timings: AttachAnswer['timings_ms'], started = performance.now()): Promise<FetchedKey> {
    const fetched = await fetchKey(deps, plan.ctx, choice.keyId, peer, plan.purpose);
    timings.key = elapsed(started);
    killPoint('attach:key-fetched');
    return { choice, object: fetched.object, source: choice.created ? 'created' : fetched.source };
  }

  async function onDevice(plan: AttachPlan, pinned: DeviceIdentity, early: FetchedKey | undefined, peer: Peer, timings: AttachAnswer['timings_ms'], signal?: AbortSignal): Promise<AttachOutcome> {
    const header = isLuksType(plan.provider) ? await driver.header(pinned) : undefined;
    const previous = deps.registry.get(plan.name);
    const started = performance.now();
    const fetched = early ?? (await fetchChosen(plan, plan.key.kind === 'given' ? plan.key.key : await plan.key.choose({ ctx: plan.ctx, pinned, header, previous }, peer), peer, timings, started));
    const { choice, source } = fetched;
    try {
      const wish: AttachWish = { device: pinned, projectId: plan.projectId, keyId: choice.keyId, provider: plan.provider, readOnly: plan.readOnly };
      // An open mapping answers for its owner first (E_MAPPING_CONFLICT names what differs), the header after.
      const existing = await existingFor(plan.name, wish);
      // A volume that names its keys: another key is refused before anything is tried (and before a PBKDF run).
      if (header?.volumeToken !== undefined) assertTokenNames(plan.name, header.volumeToken, [choice.keyId]);
      if (existing !== undefined) await claimUnowned(plan.name, existing, wish, fetched.object);
      const record = plan.record({ device: pinned, keyId: choice.keyId, luksUuid: header?.uuid, token: header?.token }, choice, previous);
      // Recorded before the mapping exists: a daemon killed between the open and its answer finds its
      // own mapping on restart (adopted) instead of a foreign one that blocks the agent's retry.
      const opened = await withIntent(plan.name, existing === undefined ? record : undefined, () =>
        openWithKey(
          deps,
          { name: plan.name, device: pinned, header, provider: plan.provider, format: plan.format, token: plan.token?.(choice), volumeToken: plan.provider === 'luks2' ? plan.volumeToken?.(choice) : undefined, cipher: plan.cipher, keySize: plan.keySize, readOnly: plan.readOnly, allowDiscards: plan.allowDiscards },
          fetched.object,
          timings,
          existing?.status,
          signal,
        ),
      );
      killPoint('attach:opened');
      // An idempotent answer keeps the record it was checked against (and its origin).
      if (opened.opened) deps.registry.set(plan.name, { ...record, ...(opened.uuid === null ? {} : { luksUuid: opened.uuid }) });
      return { ...opened, pinned, keyId: choice.keyId, source, timings };
    } finally {
      fetched.object.zeroize();
    }
  }


  /** Runs `plan`; the caller answers from the outcome. */
  async function run(plan: AttachPlan, peer: Peer, signal?: AbortSignal): Promise<AttachOutcome> {
    const timings = { key: 0, format: 0, open: 0, total: 0 };
    const outcome = await locks.with([lockKey.devicePath(plan.device), lockKey.mapping(plan.name), ...plan.key.locks], async () => {
      // Queued behind another request past this one's deadline: its caller has had E_REQUEST_TIMEOUT, do nothing.
      signal?.throwIfAborted();
      const device = plan.symlink ? await driver.deviceBehindSymlink(plan.name, plan.device) : plan.device;
      const early = plan.key.kind === 'given' ? await fetchChosen(plan, plan.key.key, peer, timings) : undefined;
      try {
        const pinned = await driver.pinBacking(device);
        // The path lock serialises requests naming the device one way; this one, every way (/dev/disk/by-id/x, /dev/sdb).
        return await locks.with([lockKey.device(pinned.rdev)], () => onDevice(plan, pinned, early, peer, timings, signal));
      } finally {
        early?.object.zeroize();
      }
    });
    if (plan.symlink) {
      const failed = await driver.pointSymlink(plan.device, plan.name);
      if (failed !== undefined) deps.log.warn('could not point the device symlink at the mapping, ignoring', { link: plan.device, name: plan.name, reason: failed });
    }
    return outcome;
  }

  return { run };
}

export type AttachPipeline = ReturnType<typeof attachPipeline>;
