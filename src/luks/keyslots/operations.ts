import { describeKdf, keyslotKdfs, satisfies } from './kdf.js';
import type { DeviceIdentity } from '../device/identity.js';
import { exec } from '../commands/exec.js';
import type { DriverContext } from '../driver-context.js';
import { DEFAULT_PBKDF, type KeyslotUpgrade, type Pbkdf } from '../options.js';
import { checkKeyLength, hexPassphrase, mangledHexPassphrase } from '../commands/passphrase.js';
import { pbkdfArgs } from '../providers/luks-header.js';

/** A LUKS device's keyslots beyond open: rewriting a slow one, and testing a key without mapping anything. */
export function keyslotOperations(deps: DriverContext) {
  const { ctx, allocator, locks, resolveDevice, dumpOf, withKey } = deps;

  /**
   * Rewrites the keyslot `key` opens with `pbkdf` (default: the fast one
   * portcullis formats with), so later opens of a volume os-brick formatted
   * (cryptsetup's default: seconds of argon2id or pbkdf2 per open) cost
   * milliseconds. With `legacyPassphrase` the slot is opened with os-brick's
   * old mangled passphrase and rewritten with the proper one. cryptsetup
   * writes the new keyslot before it retires the old, so a crash midway
   * leaves a volume that still opens. A no-op when the slot is already fast.
   */
  async function upgradeKeyslot(device: string | DeviceIdentity, key: Uint8Array, opts: { pbkdf?: Pbkdf; legacyPassphrase?: boolean } = {}): Promise<KeyslotUpgrade> {
    const pbkdf = opts.pbkdf ?? DEFAULT_PBKDF;
    const target = describeKdf(pbkdf);
    checkKeyLength(key);
    // cryptsetup's "default" means "benchmark this host": nothing to compare a slot against.
    if (pbkdf.type === 'default') return { upgraded: false, from: null, to: target };
    const pinned = await resolveDevice(device);
    const { path } = pinned;
    return locks.with([`dev:${pinned.rdev}`], async () => {
      const header = await dumpOf(path);
      const slots = keyslotKdfs(header);
      const slow = slots.filter((s) => !satisfies(s, pbkdf));
      if (slow.length === 0) return { upgraded: false, from: null, to: target };
      const hexLength = key.length * 2;
      // Both passphrases go on stdin, old then new, told apart by --keyfile-size / --new-keyfile-size.
      const buffer = allocator.alloc(2 * hexLength);
      try {
        const oldLength = opts.legacyPassphrase === true ? mangledHexPassphrase(key, buffer.view()).length : hexPassphrase(key, buffer.view().subarray(0, hexLength)).length;
        hexPassphrase(key, buffer.view().subarray(oldLength, oldLength + hexLength));
        const stdin = buffer.view().subarray(0, oldLength + hexLength);
        let slot = slow.length === slots.length ? slow[0] : undefined;
        if (slots.length > 1) {
          // Several slots, some fast: ask which one this key opens (one PBKDF run) rather than rewrite a fast one.
          const test = await exec(ctx, ['cryptsetup', 'open', '--test-passphrase', '--verbose', '--key-file=-', `--keyfile-size=${oldLength}`, path], {
            stdin,
            what: `find the keyslot of ${path}`,
          });
          const unlocked = /Key slot (\d+) unlocked/.exec(test.stdout.toString('utf8') + test.stderr.toString('utf8'));
          slot = slots.find((s) => s.slot === Number(unlocked?.[1] ?? -1));
        }
        if (slot === undefined || satisfies(slot, pbkdf)) return { upgraded: false, from: null, to: target };
        const argv = ['cryptsetup', '--batch-mode', 'luksChangeKey', '--key-file=-', `--keyfile-size=${oldLength}`, `--new-keyfile-size=${hexLength}`];
        argv.push(...pbkdfArgs(pbkdf, header.version === 1 ? 'luks' : 'luks2'), path, '-');
        await exec(ctx, argv, { stdin, what: `rewrite keyslot ${slot.slot} of ${path} with ${target}` });
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
    const { path } = await resolveDevice(device);
    const result = await withKey(key, (stdin) => exec(ctx, ['cryptsetup', 'open', '--test-passphrase', '--key-file=-', path], { stdin, ok: [2], what: `test a key against ${path}` }));
    return result.code === 0;
  }

  return { upgradeKeyslot, verifyKey };
}
