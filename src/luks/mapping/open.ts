import { describeSignature, probeSignature } from '../device/blank.js';
import { rdevAt, type DeviceIdentity } from '../device/identity.js';
import { luksError, LuksError } from '../errors.js';
import { exec, type ExecContext } from '../commands/exec.js';
import { mangledHexPassphrase } from '../commands/passphrase.js';
import { ensureNode, type DriverContext } from '../driver-context.js';
import type { OpenOptions, OpenResult } from '../options.js';
import { providerDefinition } from '../providers/index.js';
import { removeHalfCreated } from './host.js';
import type { MappingStatus } from './status.js';

/** Whether the kernel's name for a mapping's backing device is the pinned device (/dev/mapper/x and /dev/dm-3 are one). */
async function sameDevice(dc: DriverContext, existing: MappingStatus, pinned: DeviceIdentity): Promise<boolean> {
  if (existing.deviceRdev !== undefined) return existing.deviceRdev === pinned.rdev;
  if (existing.device === undefined) return false;
  if (existing.device === pinned.path) return true;
  return (await rdevAt(dc.ops, existing.device)) === pinned.rdev;
}

/** cryptsetup ≥ 2.3.4 has the no-workqueue flags; the kernel needs dm-crypt ≥ 1.22 (Linux 5.9). Asked once per driver. */
export function perfFlagProbe(ctx: ExecContext): () => Promise<boolean> {
  let answer: Promise<boolean> | undefined;
  return () =>
    (answer ??= (async () => {
      const help = await exec(ctx, ['cryptsetup', '--help'], { what: 'list cryptsetup options' });
      if (!help.stdout.toString('utf8').includes('perf-no_read_workqueue')) return false;
      const targets = await exec(ctx, ['dmsetup', 'targets'], { ok: [1], what: 'list device-mapper targets' });
      const crypt = /^crypt\s+v(\d+)\.(\d+)/m.exec(targets.stdout.toString('utf8'));
      return crypt !== null && (Number(crypt[1]) > 1 || Number(crypt[2]) >= 22);
    })());
}

/**
 * Maps `device` as `name` with the key: one cryptsetup process. Idempotent:
 * an existing mapping of this name for this device is answered as is; the
 * name open for another device is E_MAPPING_IN_USE. A plain mapping is
 * refused over a device blkid recognises. os-brick's old mangled passphrase
 * is tried when the proper one does not open a header, as os-brick does.
 */
export async function openMapping(dc: DriverContext, supportsPerfFlags: () => Promise<boolean>, device: string | DeviceIdentity, name: string, key: Uint8Array, opts: OpenOptions): Promise<OpenResult> {
  dc.checkName(name);
  const pinned = await dc.resolveDevice(device);
  const { path } = pinned;
  const { ctx } = dc;
  return dc.locks.with([`dev:${pinned.rdev}`, `map:${name}`], async () => {
    const existing = await dc.status(name);
    if (existing !== undefined) {
      if (!(await sameDevice(dc, existing, pinned))) {
        throw luksError('E_MAPPING_IN_USE', `Mapping ${name} is already open for ${existing.device ?? 'another device'}, not ${path}`, {
          details: { name, differs: ['device'], device: path, existing_device: existing.device ?? null },
        });
      }
      return { name, mapperPath: await ensureNode(dc, name), opened: false, legacyPassphrase: false, removedHalfCreated: false, status: existing, uuid: await dc.luksUuidOf(path, opts.type) };
    }
    const flags: string[] = [];
    if (opts.readOnly === true) flags.push('--readonly');
    if (opts.allowDiscards === true) flags.push('--allow-discards');
    if (opts.perfNoWorkqueue !== false && (await supportsPerfFlags())) flags.push('--perf-no_read_workqueue', '--perf-no_write_workqueue');
    const provider = providerDefinition(opts.type);
    if (!provider.header) {
      // A plain volume's ciphertext carries no signature. One that blkid recognises (a file system,
      // a LUKS header) is something else, which writing through a plain mapping would destroy.
      const found = await probeSignature(ctx, path, 'map it as plain');
      if (found !== undefined) {
        throw luksError('E_DEVICE_NOT_PLAIN', `Device ${path} holds a ${describeSignature(found)}, so it is not a plain-encrypted volume; refusing to map it as plain`, {
          details: { device: path, signature: found.kind, ...(found.offset === undefined ? {} : { offset: found.offset }) },
        });
      }
    }
    const argv = provider.openArgv(path, name, flags, opts);
    /** Maps it; true when only os-brick's old mangled passphrase opened it. */
    const openOnce = async (): Promise<boolean> => {
      try {
        await dc.withKey(key, (stdin) => exec(ctx, argv, { stdin, what: `open ${path} as ${opts.type} mapping ${name}` }));
        return false;
      } catch (err) {
        if (!provider.header || !(err instanceof LuksError && err.code === 'E_WRONG_KEY')) throw err;
        // Volumes formatted by older os-brick carry a mangled hex passphrase; os-brick retries with it, so must we.
        const buffer = dc.allocator.alloc(key.length * 2);
        try {
          const mangled = mangledHexPassphrase(key, buffer.view());
          if (mangled.length === key.length * 2) throw err; // identical to the proper hex: nothing else to try
          await exec(ctx, argv, { stdin: mangled, what: `open ${path} as ${name} with os-brick's legacy passphrase` });
          return true;
        } finally {
          buffer.wipe();
        }
      }
    };
    opts.signal?.throwIfAborted();
    await dc.recheck(pinned, 'open it');
    let legacyPassphrase: boolean;
    let removedHalfCreated = false;
    try {
      legacyPassphrase = await openOnce();
    } catch (err) {
      // "Already exists" for a name status() called absent: a dm device without a table, what an open
      // killed midway leaves. Removed once, then the open runs again; anything else stands.
      if (!(err instanceof LuksError && err.code === 'E_DEVICE_BUSY') || !(await removeHalfCreated(ctx, name))) throw err;
      removedHalfCreated = true;
      legacyPassphrase = await openOnce();
    }
    const mapperPath = await ensureNode(dc, name);
    // Read here, with the device already resolved: the caller needs both and would spend a process per question.
    return { name, mapperPath, opened: true, legacyPassphrase, removedHalfCreated, status: await dc.status(name), uuid: await dc.luksUuidOf(path, opts.type) };
  });
}
