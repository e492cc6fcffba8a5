import { performance } from 'node:perf_hooks';
import type { MappingStatus } from '../../luks/driver.js';
import { keyedLock } from '../../luks/lock.js';
import { resolveProvider, type Provider } from '../../luks/providers.js';
import type { ManagedObject } from '../../keyclient/objects/index.js';
import { luksError } from '../../luks/errors.js';
import { daemonError } from '../errors.js';
import type { AttachAnswer, AttachBody, DetachAnswer, KeySource, ResizeBody, VolumeAnswer } from '../api/wire.js';
import { checkBackend, codeOf, elapsed, fetchKey, keyContext, type Peer, type ServiceDeps, type VolumeRecord } from './context.js';

/** What an attach needs once the key is known; shared by volumes and ephemeral disks. */
export interface OpenRequest {
  name: string;
  device: string;
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
  async function openWithKey(req: OpenRequest, key: ManagedObject, timings: AttachAnswer['timings_ms']): Promise<{ opened: boolean; formatted: boolean; keyslotUpgraded: boolean; status: MappingStatus | undefined; uuid: string | null }> {
    const luks = deps.luks();
    const isLuksType = req.provider === 'luks' || req.provider === 'luks2';
    // Only LUKS needs to know first: an open mapping means no isLuks/format question (plain has none).
    const existing = isLuksType ? await driver.status(req.name) : undefined;
    let formatted = false;
    if (isLuksType && existing === undefined && !(await driver.isLuks(req.device))) {
      if (req.format !== 'if-blank') {
        throw luksError('E_DEVICE_WRONG', `Device ${req.device} holds no LUKS header and format is "never"; pass format "if-blank" to format a blank device`, {
          details: { device: req.device },
        });
      }
      const t = performance.now();
      await driver.format(req.device, key.bytes(), {
        type: req.provider === 'luks' ? 'luks' : 'luks2',
        cipher: req.cipher ?? luks.cipher,
        keySize: req.keySize ?? luks.key_size,
        pbkdf: { type: luks.pbkdf, iterations: luks.pbkdf_iterations },
      });
      timings.format = elapsed(t);
      formatted = true;
    }
    const t = performance.now();
    const opened = await driver.open(req.device, req.name, key.bytes(), {
      type: req.provider === 'luks2' ? 'luks2' : req.provider === 'plain' ? 'plain' : 'luks',
      readOnly: req.readOnly,
      allowDiscards: req.allowDiscards,
      perfNoWorkqueue: luks.perf_no_workqueue,
      ...(req.provider === 'plain' ? { cipher: req.cipher ?? luks.cipher, keySize: req.keySize ?? luks.key_size } : {}),
    });
    timings.open = elapsed(t);
    if (opened.legacyPassphrase) deps.log.warn('legacy os-brick passphrase opened the volume', { name: req.name, device: req.device });
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
      if (result.upgraded) deps.log.info('keyslot rewritten to the fast PBKDF', { name: req.name, device: req.device, from: result.from, to: result.to });
      return result.upgraded;
    } catch (err) {
      deps.log.warn('keyslot upgrade failed; the volume is attached and unchanged', { name: req.name, device: req.device, error: codeOf(err) });
      return false;
    }
  }

  async function attach(name: string, body: AttachBody, peer: Peer): Promise<AttachAnswer> {
    const started = performance.now();
    const provider = resolveProvider(body.provider);
    checkBackend(deps, body.key.backend);
    const timings = { key: 0, format: 0, open: 0, total: 0 };
    let keySource: KeySource | null = null;
    try {
      const answer = await locks.with([`dev:${body.device}`, `map:${name}`], async (): Promise<AttachAnswer> => {
        if (provider === 'nop') {
          // os-brick's NoOpEncryptor: the volume is not encrypted; the agent uses the device itself.
          return { name, mapper_path: body.device, device: body.device, provider, luks_uuid: null, size_bytes: null, key_id: null, key_source: null, opened: false, formatted: false, keyslot_upgraded: false, timings_ms: timings };
        }
        const device = body.symlink ? await deviceBehindSymlink(name, body.device) : body.device;
        const t = performance.now();
        const { object: key, source } = await fetchKey(deps, keyContext(body.project_id, body.auth?.token), body.key.id, peer, `attach ${name}`);
        keySource = source;
        timings.key = elapsed(t);
        try {
          const result = await openWithKey({ name, device, provider, format: body.format, cipher: body.cipher, keySize: body.key_size, readOnly: body.read_only, allowDiscards: body.allow_discards }, key, timings);
          const record: VolumeRecord = { origin: 'attached', device: result.status?.device ?? device, projectId: body.project_id, keyId: body.key.id };
          deps.registry.set(name, record);
          if (body.symlink) await replaceSymlink(body.device, name);
          return {
            name,
            mapper_path: `/dev/mapper/${name}`,
            device: result.status?.device ?? device,
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
   * os-brick replaces the attachment's symlink with one to the mapping. A
   * second attach then finds the link pointing at our mapping already: the
   * real device is the mapping's backing device.
   */
  async function deviceBehindSymlink(name: string, link: string): Promise<string> {
    const status = await driver.status(name);
    if (status?.device === undefined) return link;
    // Both resolved the same way (/dev/mapper/X may itself be a link to /dev/dm-N): only our own mapping counts.
    const real = await deps.runner.run(['readlink', '-f', link, status.mapperPath], { timeoutMs: 10_000 });
    const [linkTarget, mappingTarget] = real.stdout.toString('utf8').trim().split('\n');
    return linkTarget !== undefined && linkTarget === mappingTarget ? status.device : link;
  }

  async function replaceSymlink(link: string, name: string): Promise<void> {
    // Only ever a symlink: `ln --force` over a device node would replace the node itself.
    const isLink = await deps.runner.run(['test', '-L', link], { timeoutMs: 10_000 });
    if (isLink.code !== 0) {
      deps.log.warn('symlink requested but the device path is not a symlink, ignoring', { link, name });
      return;
    }
    const result = await deps.runner.run(['ln', '--symbolic', '--force', '--no-dereference', `/dev/mapper/${name}`, link], { timeoutMs: 10_000 });
    if (result.code !== 0) deps.log.warn('could not point the device symlink at the mapping, ignoring', { link, name, stderr: result.stderr.toString('utf8').trim() });
  }

  async function holders(name: string): Promise<number> {
    const info = await deps.runner.run(['dmsetup', 'info', '-c', '--noheadings', '-o', 'open', name], { timeoutMs: 30_000 });
    const count = Number.parseInt(info.stdout.toString('utf8').trim(), 10);
    return Number.isFinite(count) ? count : 0;
  }

  async function detach(name: string, options: { deferred: boolean }): Promise<DetachAnswer> {
    const started = performance.now();
    try {
      const answer = await locks.with([`map:${name}`], async (): Promise<DetachAnswer> => {
        const status = await driver.status(name);
        if (status === undefined) {
          // Already gone is what detach wants: idempotent, as os-brick's close of an absent mapping.
          deps.registry.delete(name);
          return { name, closed: false, deferred: false, timings_ms: { total: 0 } };
        }
        const open = await holders(name);
        if (open > 0 && !options.deferred) {
          throw daemonError('E_VOLUME_BUSY', `Volume ${name} is held open by ${open} holder(s) (mounted, or in use by a guest); refusing to detach. Release it first, or detach with ?deferred=true`, {
            details: { name, holders: open },
          });
        }
        await driver.close(name, { deferred: options.deferred });
        if (!options.deferred || open === 0) deps.registry.delete(name);
        return { name, closed: true, deferred: options.deferred && open > 0, timings_ms: { total: 0 } };
      });
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
      origin: record?.origin ?? 'kernel',
      project_id: record?.projectId ?? null,
      key_id: record?.keyId ?? null,
    };
  }

  async function volume(name: string): Promise<VolumeAnswer> {
    const status = await driver.status(name);
    if (status === undefined) throw notFound(name);
    return answerOf(status);
  }

  return {
    attach,
    detach,
    resize,
    volume,
    openWithKey,
    locks,
    finished,
    async list(): Promise<VolumeAnswer[]> {
      return (await driver.list()).map(answerOf).sort((a, b) => a.name.localeCompare(b.name));
    },
    /** At start: every crypt mapping the kernel has becomes known, so a restart neither loses nor duplicates one. */
    async adopt(): Promise<number> {
      const mappings = await driver.list();
      for (const m of mappings) {
        if (!deps.registry.has(m.name)) deps.registry.set(m.name, deps.registry.saved(m.name, m.device) ?? { origin: 'adopted', device: m.device, projectId: null, keyId: null });
      }
      return mappings.length;
    },
  };
}

function notFound(name: string) {
  return daemonError('E_VOLUME_NOT_FOUND', `No crypt mapping named ${name} exists`, { details: { name } });
}

function sizeOf(status: MappingStatus | undefined): number | null {
  return status?.sizeSectors === undefined ? null : status.sizeSectors * 512;
}
