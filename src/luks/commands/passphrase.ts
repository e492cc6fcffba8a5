import { luksError } from '../errors.js';

/**
 * os-brick's passphrase for a volume key is the lower-case hex of the raw key
 * bytes (binascii.hexlify), passed on stdin. Using the same convention is
 * what lets volumes move between os-brick and portcullis both ways.
 *
 * Built byte by byte into a Buffer, never a JS string: strings are immutable
 * and cannot be zeroed. The caller wipes the result after use; `out` lets it
 * live in locked memory (the daemon's allocator) rather than the JS heap.
 */
const DIGITS = Buffer.from('0123456789abcdef', 'latin1');

export function hexPassphrase(key: Uint8Array, out: Buffer = Buffer.alloc(key.length * 2)): Buffer {
  if (out.length !== key.length * 2) throw new RangeError(`hexPassphrase needs ${key.length * 2} bytes of output, got ${out.length}`);
  for (let i = 0; i < key.length; i += 1) {
    const byte = key[i] as number;
    out[2 * i] = DIGITS[byte >> 4] as number;
    out[2 * i + 1] = DIGITS[byte & 0x0f] as number;
  }
  return out;
}

/**
 * The passphrase older os-brick/nova releases produced by mistake:
 * ''.join(hex(x).replace('0x', '') for x in key) — each byte's hex without
 * its leading zero. Volumes formatted then still carry it; os-brick falls
 * back to it on open, and so do we. Written into `out` (at least twice the
 * key's length: locked memory in the daemon); the answer is the used part.
 */
export function mangledHexPassphrase(key: Uint8Array, out: Buffer = Buffer.alloc(key.length * 2)): Buffer {
  if (out.length < key.length * 2) throw new RangeError(`mangledHexPassphrase needs ${key.length * 2} bytes of output, got ${out.length}`);
  let n = 0;
  for (const byte of key) {
    if (byte >= 16) out[n++] = DIGITS[byte >> 4] as number;
    out[n++] = DIGITS[byte & 0x0f] as number;
  }
  return out.subarray(0, n);
}

const MIN_KEY_BYTES = 16;

/** @throws E_LUKS_INVALID_ARGUMENT for a key too short to be one */
export function checkKeyLength(key: Uint8Array): void {
  if (key.length < MIN_KEY_BYTES) throw luksError('E_LUKS_INVALID_ARGUMENT', `Key of ${key.length} bytes is too short (at least ${MIN_KEY_BYTES})`);
}
