import type { DeviceIdentity } from '../device/identity.js';
import type { DriverContext } from '../driver-context.js';
import { luksError } from '../errors.js';
import { checkKeyLength, hexPassphrase } from '../commands/passphrase.js';
import { volumeTokenJson, type SlotKey } from '../header/volume-token.js';
import type { Pbkdf } from '../options.js';

/**
 * The steps of a key rotation (a rekey), each one write or one question,
 * so that the daemon can order them crash-safely and stop between them: add
 * a keyslot for the new key and prove it, rewrite the header's portcullis
 * token, destroy the old key's slot. The volume key (what the data is
 * encrypted with) never changes: only which passphrases unlock it. The
 * passphrase stays os-brick's hex of the key bytes. The caller holds the
 * device's locks across the steps.
 */
export function keyslotRotation(dc: DriverContext) {
  const { crypt, allocator } = dc;

  /** The keyslot `key` opens (one PBKDF run, nothing mapped), or undefined when none does. */
  function slotOpenedBy(pinned: DeviceIdentity, key: Uint8Array): Promise<number | undefined> {
    return dc.withKey(key, (passphrase) => crypt.testKey(pinned, passphrase));
  }

  /**
   * Adds a keyslot for `next`, unlocked by `existing` (which must open one),
   * then proves it: `next`'s own bytes must open exactly the new slot
   * (KEY_TEST) before anything may rely on it.
   * @returns the new slot
   * @throws E_WRONG_KEY when `existing` opens no slot, E_CRYPTSETUP_FAILED when the new slot does not open with `next`
   */
  async function addSlot(pinned: DeviceIdentity, version: 1 | 2, existing: Uint8Array, next: Uint8Array, pbkdf: Pbkdf): Promise<number> {
    checkKeyLength(existing);
    checkKeyLength(next);
    await dc.recheck(pinned, 'add a keyslot');
    const old = allocator.alloc(existing.length * 2);
    const fresh = allocator.alloc(next.length * 2);
    try {
      const oldPass = hexPassphrase(existing, old.view());
      const newPass = hexPassphrase(next, fresh.view());
      const slot = await crypt.addKey(pinned, version, oldPass, newPass, pbkdf);
      const proven = await crypt.testKey(pinned, newPass);
      if (proven !== slot) {
        throw luksError('E_CRYPTSETUP_FAILED', `The keyslot just added to ${pinned.path} (${slot}) does not open with the new key (it opens ${proven ?? 'none'}); the old keyslot is kept`, {
          details: { device: pinned.path, slot, opens: proven ?? null },
        });
      }
      return slot;
    } finally {
      old.wipe();
      fresh.wipe();
    }
  }

  /**
   * Destroys keyslot `slot`, never the one a proven key opens: `kept` is the
   * slot the caller proved (KEY_TEST) under the same locks, and must be
   * another. The helper also refuses the last active slot.
   */
  async function removeSlot(pinned: DeviceIdentity, slot: number, kept: number): Promise<void> {
    if (slot === kept) throw luksError('E_LUKS_INVALID_ARGUMENT', `Keyslot ${slot} of ${pinned.path} is the one the new key opens; refusing to destroy it`, { details: { device: pinned.path, slot } });
    await dc.recheck(pinned, `destroy keyslot ${slot}`);
    await crypt.removeKey(pinned, slot);
  }

  /** Writes the portcullis volume token (LUKS2): replaces token `tokenId` in place, or adds it. @returns its id */
  async function writeToken(pinned: DeviceIdentity, slots: Record<string, SlotKey>, tokenId?: number): Promise<number> {
    await dc.recheck(pinned, 'rewrite its portcullis token');
    return crypt.setToken(pinned, volumeTokenJson(slots), tokenId);
  }

  return { slotOpenedBy, addSlot, removeSlot, writeToken };
}
