import { describeSignature } from '../device/blank.js';
import { rdevAt, type DeviceIdentity } from '../device/identity.js';
import { luksError, LuksError } from '../errors.js';
import { mangledHexPassphrase } from '../commands/passphrase.js';
import { ensureNode, type DriverContext } from '../driver-context.js';
import type { OpenOptions, OpenResult } from '../options.js';
import type { CryptOpenRequest } from '../crypt/crypt-ops.js';
import { providerDefinition } from '../providers/index.js';
import type { MappingStatus } from './status.js';

/** Whether the kernel's name for a mapping's backing device is the pinned device (/dev/mapper/x and /dev/dm-3 are one). */
async function sameDevice(dc: DriverContext, existing: MappingStatus, pinned: DeviceIdentity): Promise<boolean> {
  if (existing.deviceRdev !== undefined) return existing.deviceRdev === pinned.rdev;
  if (existing.device === undefined) return false;
  if (existing.device === pinned.path) return true;
  return (await rdevAt(dc.ops, existing.device)) === pinned.rdev;
}

/**
 * Maps `device` as `name` with the key: one helper operation (or one
 * cryptsetup process without the helper). Idempotent:
 * an existing mapping of this name for this device is answered as is; the
 * name open for another device is E_MAPPING_IN_USE. A plain mapping is
 * refused over a device blkid recognises. os-brick's old mangled passphrase
 * is tried when the proper one does not open a header, as os-brick does.
 */
export async function openMapping(dc: DriverContext, device: string | DeviceIdentity, name: string, key: Uint8Array, opts: OpenOptions): Promise<OpenResult> {
  dc.checkName(name);
  const pinned = await dc.resolveDevice(device);
  const { path } = pinned;
  const { crypt } = dc;
  return dc.locks.with([`dev:${pinned.rdev}`, `map:${name}`], async () => {
    const existing = await dc.status(name);
    if (existing !== undefined) {
      if (!(await sameDevice(dc, existing, pinned))) {
        throw luksError('E_MAPPING_IN_USE', `Mapping ${name} is already open for ${existing.device ?? 'another device'}, not ${path}`, {
          details: { name, differs: ['device'], device: path, existing_device: existing.device ?? null },
        });
      }
      return { name, mapperPath: await ensureNode(dc, name), opened: false, legacyPassphrase: false, removedHalfCreated: false, status: existing, uuid: await dc.luksUuidOf(pinned, opts.type) };
    }
    const noWorkqueue = opts.perfNoWorkqueue !== false && (await crypt.supportsNoWorkqueue());
    const provider = providerDefinition(opts.type);
    if (!provider.header) {
      // A plain volume's ciphertext carries no signature. One that blkid recognises (a file system,
      // a LUKS header) is something else, which writing through a plain mapping would destroy.
      const found = await crypt.probe(pinned, 'map it as plain');
      if (found !== undefined) {
        throw luksError('E_DEVICE_NOT_PLAIN', `Device ${path} holds a ${describeSignature(found)}, so it is not a plain-encrypted volume; refusing to map it as plain`, {
          details: { device: path, signature: found.kind, ...(found.offset === undefined ? {} : { offset: found.offset }) },
        });
      }
    }
    const request = (passphrase: Buffer): CryptOpenRequest => ({
      type: opts.type, device: pinned, name, passphrase, readOnly: opts.readOnly === true, allowDiscards: opts.allowDiscards === true, noWorkqueue, cipher: opts.cipher, keySize: opts.keySize,
    });
    /** Maps it; true when only os-brick's old mangled passphrase opened it. */
    const openOnce = async (): Promise<boolean> => {
      try {
        await dc.withKey(key, (passphrase) => crypt.open(request(passphrase)));
        return false;
      } catch (err) {
        if (!provider.header || !(err instanceof LuksError && err.code === 'E_WRONG_KEY')) throw err;
        // Volumes formatted by older os-brick carry a mangled hex passphrase; os-brick retries with it, so must we.
        const buffer = dc.allocator.alloc(key.length * 2);
        try {
          const mangled = mangledHexPassphrase(key, buffer.view());
          if (mangled.length === key.length * 2) throw err; // identical to the proper hex: nothing else to try
          await crypt.open(request(mangled));
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
      if (!(err instanceof LuksError && err.code === 'E_DEVICE_BUSY') || !(await crypt.removeHalfCreated(name))) throw err;
      removedHalfCreated = true;
      legacyPassphrase = await openOnce();
    }
    const mapperPath = await ensureNode(dc, name);
    // Read here, with the device already resolved: the caller needs both and would spend a process per question.
    return { name, mapperPath, opened: true, legacyPassphrase, removedHalfCreated, status: await dc.status(name), uuid: await dc.luksUuidOf(pinned, opts.type) };
  });
}
