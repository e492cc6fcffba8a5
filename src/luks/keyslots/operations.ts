import { describeKdf, keyslotKdfs, satisfies } from './kdf.js';
import type { DeviceIdentity } from '../device/identity.js';
import type { DriverContext } from '../driver-context.js';
import { DEFAULT_PBKDF, type KeyslotUpgrade, type Pbkdf } from '../options.js';
import { checkKeyLength, hexPassphrase, mangledHexPassphrase } from '../commands/passphrase.js';

/** A LUKS device's keyslots beyond open: rewriting a slow one, and testing a key without mapping anything. */
export function keyslotOperations(deps: DriverContext) {
  const { crypt, allocator, locks, resolveDevice, dumpOf, withKey } = deps;

  /**
   * Rewrites the keyslot `key` opens with `pbkdf` (default: the fast one
   * portcullis formats with), so later opens of a volume os-brick formatted
   * (cryptsetup's default: seconds of argon2id or pbkdf2 per open) cost
   * milliseconds. With `legacyPassphrase` the slot is opened with os-brick's
   * old mangled passphrase and rewritten with the proper one. The new
   * keyslot is written before the old one is retired, so a crash midway
   * leaves a volume that still opens. A no-op when the slot is already fast.
   */
  async function upgradeKeyslot(device: string | DeviceIdentity, key: Uint8Array, opts: { pbkdf?: Pbkdf; legacyPassphrase?: boolean } = {}): Promise<KeyslotUpgrade> {
    const pbkdf = opts.pbkdf ?? DEFAULT_PBKDF;
    const target = describeKdf(pbkdf);
    checkKeyLength(key);
    // cryptsetup's "default" means "benchmark this host": nothing to compare a slot against.
    if (pbkdf.type === 'default') return { upgraded: false, from: null, to: target };
    const pinned = await resolveDevice(device);
    return locks.with([`dev:${pinned.rdev}`], async () => {
      const header = await dumpOf(pinned);
      const slots = keyslotKdfs(header);
      const slow = slots.filter((s) => !satisfies(s, pbkdf));
      if (slow.length === 0) return { upgraded: false, from: null, to: target };
      const hexLength = key.length * 2;
      const buffer = allocator.alloc(2 * hexLength);
      try {
        const old = opts.legacyPassphrase === true ? mangledHexPassphrase(key, buffer.view()) : hexPassphrase(key, buffer.view().subarray(0, hexLength));
        const next = hexPassphrase(key, buffer.view().subarray(old.length, old.length + hexLength));
        let slot = slow.length === slots.length ? slow[0] : undefined;
        if (slots.length > 1) {
          // Several slots, some fast: ask which one this key opens (one PBKDF run) rather than rewrite a fast one.
          const unlocked = await crypt.testKey(pinned, old);
          slot = slots.find((s) => s.slot === (unlocked ?? -1));
        }
        if (slot === undefined || satisfies(slot, pbkdf)) return { upgraded: false, from: null, to: target };
        await crypt.changeKey(pinned, header.version, old, next, pbkdf);
        return { upgraded: true, from: describeKdf(slot), to: target };
      } finally {
        buffer.wipe();
      }
    });
  }

  /**
   * Whether `key` opens a keyslot of the LUKS device, without mapping anything
   * (one PBKDF run): how an attach proves it owns a mapping no record names.
   */
  async function verifyKey(device: string | DeviceIdentity, key: Uint8Array): Promise<boolean> {
    const pinned = await resolveDevice(device);
    return (await withKey(key, (passphrase) => crypt.testKey(pinned, passphrase))) !== undefined;
  }

  return { upgradeKeyslot, verifyKey };
}
