import { assertBlank } from '../device/blank.js';
import type { DeviceIdentity } from '../device/identity.js';
import { deviceHolders } from '../device/use.js';
import { luksError } from '../errors.js';
import type { DriverContext } from '../driver-context.js';
import { DEFAULT_PBKDF, type FormatOptions } from '../options.js';
import { providerDefinition } from '../providers/index.js';
import { pbkdfArgs } from '../providers/luks-header.js';
import { diskTokenJson, type DiskToken } from './token.js';
import { volumeTokenJson, type SlotKey } from './volume-token.js';

/**
 * Writes a LUKS header, only on a provably blank device (see assertBlank):
 * never one that holds LUKS, any blkid signature, non-zero data within what
 * the format overwrites, or that cannot be read. With `token`, the disk's
 * identity goes into the LUKS2 header right after, before anything is mapped;
 * with `volumeToken`, a volume's keyslot map (volume-token.ts) likewise.
 * @returns the new header's LUKS UUID
 */
export async function formatDevice(dc: DriverContext, device: string | DeviceIdentity, key: Uint8Array, opts: FormatOptions & { token?: DiskToken; volumeToken?: Record<string, SlotKey> }): Promise<string> {
  const pinned = await dc.resolveDevice(device);
  const { path } = pinned;
  const { crypt } = dc;
  return dc.locks.with([`dev:${pinned.rdev}`], async () => {
    if ((await dc.headerOf(pinned)) !== undefined) throw luksError('E_DEVICE_NOT_BLANK', `Device ${path} already holds a LUKS header; refusing to format`, { details: { device: path, signature: 'crypto_LUKS' } });
    if ((opts.token !== undefined || opts.volumeToken !== undefined) && opts.type !== 'luks2') throw luksError('E_LUKS_INVALID_ARGUMENT', 'Only a LUKS2 header carries tokens');
    const pbkdf = opts.pbkdf ?? DEFAULT_PBKDF;
    pbkdfArgs(pbkdf, opts.type); // LUKS1 takes pbkdf2 only: refused here, before anything is written
    const provider = providerDefinition(opts.type);
    if (provider.formatArgv === undefined) throw luksError('E_LUKS_INVALID_ARGUMENT', `${opts.type} has no header to format`);
    await assertBlank(crypt, dc.ops, pinned, provider.formatSpan);
    // A probe that hung until the request's caller gave up must not lead to a write that caller was told did not happen.
    opts.signal?.throwIfAborted();
    await dc.recheck(pinned, 'format it');
    const version = opts.type === 'luks' ? 'luks1' : 'luks2';
    // One token per format: an ephemeral disk's identity, or a volume's keyslot map (a fresh header's only slot is 0).
    const tokenJson = opts.token !== undefined ? diskTokenJson(opts.token) : opts.volumeToken !== undefined ? volumeTokenJson(opts.volumeToken) : undefined;
    await dc.withKey(key, (passphrase) => crypt.format({ version, device: pinned, passphrase, cipher: opts.cipher, keySize: opts.keySize, pbkdf, label: opts.label, tokenJson }));
    return (await dc.luksUuidOf(pinned, opts.type)) ?? '';
  });
}

/**
 * Crypto-erase: wipes every keyslot; the data can never be decrypted again.
 * Only the disk that was proven: under the device lock, right before the
 * write, the node must still be the pinned major:minor, its header must
 * still carry `uuid`, and nothing may hold the device (a mapping under any
 * name, a partition in use).
 * @throws E_DEVICE_CHANGED when the device or its header is not the proven one, E_DEVICE_BUSY when something holds it
 */
export async function eraseKeyslots(dc: DriverContext, pinned: DeviceIdentity, expect: { uuid: string }): Promise<void> {
  await dc.locks.with([`dev:${pinned.rdev}`], async () => {
    await dc.recheck(pinned, 'erase its keyslots');
    const header = await dc.headerOf(pinned);
    if (header?.uuid !== expect.uuid) {
      throw luksError('E_DEVICE_CHANGED', `${pinned.path} no longer holds the LUKS header ${expect.uuid} (now ${header?.uuid ?? 'none'}); refusing to erase it`, {
        details: { device: pinned.path, expected_uuid: expect.uuid, uuid: header?.uuid ?? null },
      });
    }
    const holders = await deviceHolders(dc.ops, pinned);
    if (holders.length > 0) {
      throw luksError('E_DEVICE_BUSY', `${pinned.path} is held by ${holders.join(', ')} (a mapping under another name, or a partition in use); refusing to erase it`, {
        details: { device: pinned.path, holders },
      });
    }
    await dc.crypt.erase(pinned);
  });
}
