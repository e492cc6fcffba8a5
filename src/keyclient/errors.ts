import { errorFamily, type ErrorOptions, type ErrorRegistry } from '../errors.js';

/**
 * Error contract of every KeyManager (Castellan's, made explicit):
 * - E_KEY_NOT_FOUND: no such object for this project. Objects of other
 *   projects look non-existent wherever the backend lets us decide (local,
 *   kmip, fixed); Barbican itself answers 403 for another project's secret, which
 *   we report as E_KEY_FORBIDDEN rather than guess.
 * - E_KEY_FORBIDDEN: the key manager refused this caller. Never retried,
 *   never served stale from a cache.
 * - E_BACKEND_UNAVAILABLE: the key manager could not be reached or failed
 *   (connection refused, timeout, 5xx after retries). Worth retrying later.
 * - E_INVALID_ARGUMENT: the request itself is wrong; nothing was sent.
 */
export const keyClientErrors = {
  E_KEY_NOT_FOUND: 'The key manager has no such object for this project.',
  E_KEY_FORBIDDEN: 'The key manager refused the caller access to this object.',
  E_BACKEND_UNAVAILABLE: 'The key manager could not be reached or failed (network, timeout, 5xx after retries).',
  E_BACKEND_AUTH: 'The key manager or Keystone rejected the credentials (401), or the catalog has no usable endpoint.',
  E_BACKEND_PROTOCOL: 'The key manager answered something this client cannot interpret.',
  E_KEY_CREATE_FAILED: 'The key manager accepted a create request but the order ended in error or never completed.',
  E_KEY_OWNED_ELSEWHERE: 'The object already belongs to another project; it cannot be adopted for this one.',
  E_INVALID_ARGUMENT: 'The request is invalid (algorithm, length, id, type or payload); nothing was sent.',
  E_NOT_SUPPORTED: 'The configured backend does not support this operation.',
  E_BACKEND_INSECURE: 'An insecure backend (fixed key) was requested without allow_insecure: true.',
  E_OBJECT_WIPED: 'The managed object was zeroized; its bytes are gone.',
  E_METADATA_ONLY: 'The managed object was fetched metadata-only and carries no bytes.',
  E_KEYSTORE_INTEGRITY: 'A local keystore record failed authentication (edited, swapped or corrupted row).',
  E_KEYSTORE_KEK: 'The local keystore key-encryption key is missing, unreadable, too permissive or does not match the keystore.',
  E_KEYSTORE_FILE: 'The local keystore database file cannot be used (mode, ownership, corruption).',
  E_KMIP_DECODE: 'A KMIP message is not valid TTLV (unknown type, wrong length, non-zero padding, too deep, or over the size limit).',
} as const satisfies ErrorRegistry;

export type KeyClientErrorCode = keyof typeof keyClientErrors;

/**
 * The key manager's errors. What the retry and cache layers decide on is
 * read through typed fields, never by spelling a `details` key.
 */
export class KeyClientError extends errorFamily('KeyClientError', keyClientErrors) {
  /** Whether the request reached the server; false: it cannot have acted on it. Undefined when unknown. */
  get requestSent(): boolean | undefined {
    const sent = this.details['requestSent'];
    return typeof sent === 'boolean' ? sent : undefined;
  }

  /** The server's Retry-After, in milliseconds, when it sent one. */
  get retryAfterMs(): number | undefined {
    const ms = this.details['retryAfterMs'];
    return typeof ms === 'number' && Number.isFinite(ms) && ms >= 0 ? ms : undefined;
  }

  /** The HTTP status of the key manager's answer, for an HTTP backend's failure. */
  get httpStatus(): number | undefined {
    const status = this.details['status'];
    return typeof status === 'number' ? status : undefined;
  }
}

export function keyError(code: KeyClientErrorCode, message: string, options?: ErrorOptions): KeyClientError {
  return new KeyClientError(code, message, options);
}

/** Errors a cache may answer with a stale key for: the backend is down, not saying no. */
export function isTransient(err: unknown): boolean {
  return err instanceof KeyClientError && err.code === 'E_BACKEND_UNAVAILABLE';
}
