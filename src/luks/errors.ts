import { errorFamily, type ErrorOptions, type ErrorRegistry } from '../errors.js';

/**
 * cryptsetup documents exit codes 1–5 (wrong parameters, no permission/bad
 * passphrase, out of memory, wrong device, device exists/busy); each maps to
 * one code here, except that exit 1 for a missing device-mapper is the
 * host's fault and has its own. The rest are portcullis' own refusals.
 */
export const luksErrors = {
  E_CRYPTSETUP_PARAMS: 'cryptsetup rejected its parameters (exit 1).',
  E_WRONG_KEY: 'No keyslot opens with this key (cryptsetup exit 2); nothing was changed.',
  E_CRYPTSETUP_NOMEM: 'cryptsetup ran out of memory (exit 3), often an argon2 PBKDF on a small host.',
  E_DEVICE_WRONG: 'cryptsetup says the device is wrong or missing (exit 4).',
  E_DEVICE_BUSY: 'The device or mapping exists already or is busy (cryptsetup exit 5).',
  E_DM_UNAVAILABLE: 'The kernel has no device-mapper (cryptsetup exit 1: "Cannot initialize device-mapper"), so no mapping can be opened on this host; the request itself was fine.',
  E_CRYPTSETUP_FAILED: 'cryptsetup failed for another reason (its message is in details.stderr).',
  E_CRYPTSETUP_TIMEOUT: 'cryptsetup (or blkid/dmsetup) did not finish in time and was killed.',
  E_DEVICE_NOT_FOUND: 'The block device does not exist.',
  E_DEVICE_CHANGED: 'The device path now names another device (major:minor) than when the request pinned it, e.g. a node reused on hot-plug; nothing was written.',
  E_DEVICE_NOT_BLANK: 'Refused to format: the device holds a signature or non-zero data.',
  E_DEVICE_NOT_PLAIN: 'Refused a plain mapping: the device holds a LUKS header or a file system signature, so it is not a plain-encrypted volume and writing through the mapping would destroy it.',
  E_DEVICE_UNREADABLE: 'The device could not be read to decide whether it is blank; refusing to format.',
  E_LUKS_HEADER: 'The device starts with a LUKS header that is damaged (unknown version, size out of range, JSON that does not parse); nothing was changed.',
  E_DEVICE_IS_MAPPING: 'Refused: the device named as a backing device is itself a dm-crypt mapping (the cleartext of a volume); nothing was mapped or written.',
  E_MAPPING_IN_USE: 'The mapping name is already open for another device; nothing was opened. (The API answers this as E_MAPPING_CONFLICT, found before the driver is asked.)',
  E_LUKS_INVALID_ARGUMENT: 'A LUKS request is invalid (mapping name, provider, cipher, key size, key length); nothing was run.',
} as const satisfies ErrorRegistry;

export type LuksErrorCode = keyof typeof luksErrors;

export const LuksError = errorFamily('LuksError', luksErrors);
export type LuksError = InstanceType<typeof LuksError>;

export function luksError(code: LuksErrorCode, message: string, options?: ErrorOptions): LuksError {
  return new LuksError(code, message, options);
}
