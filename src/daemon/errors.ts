import { commonErrors, errorFamily, type ErrorOptions, type ErrorRegistry } from '../errors.js';
import type { KeyClientErrorCode } from '../keyclient/errors.js';
import type { LuksErrorCode } from '../luks/errors.js';
import type { NativeErrorCode } from '../../native/errors.js';

/** Codes the daemon itself answers with; the keyclient's and the LUKS driver's pass through unchanged. */
export const daemonErrors = {
  E_BAD_REQUEST: 'The request is malformed (JSON, schema, path or query); nothing was done to any device.',
  E_BODY_TOO_LARGE: 'The request body is larger than limits.max_body_bytes; it was not read.',
  E_HEADERS_TOO_LARGE: 'The request line and headers exceed 16 KiB; the request was not read and the connection is closed.',
  E_CLIENT_TIMEOUT: 'The client did not send its headers (limits.header_timeout_seconds) or its body (limits.body_timeout_seconds) in time; the connection is closed.',
  E_ROUTE_NOT_FOUND: 'No such API path.',
  E_METHOD_NOT_ALLOWED: 'The API path exists but not with this HTTP method.',
  E_PEER_FORBIDDEN: 'The connecting process (by uid/gid from SO_PEERCRED) has no role that allows this request.',
  E_VOLUME_NOT_FOUND: 'No crypt mapping of that name exists.',
  E_MAPPING_CONFLICT: 'An attach names a mapping that is already open for another device, project, key, provider or mode (details.differs names each); nothing was changed.',
  E_MAPPING_FOREIGN: 'A crypt mapping of that name exists but portcullis did not make it (crypttab, swap, another tool); it is never attached over, detached, resized or erased through the API.',
  E_ERASE_REFUSED: "Erase refused: the request's project, device or key is not the ephemeral disk's (as its record and its header's LUKS UUID and token say), several disks carry its token, or the recorded disk is gone and no key was created for it; nothing was erased or deleted.",
  E_KEY_AMBIGUOUS: 'Several keys carry the name an ephemeral disk\'s key is found by, and neither its record nor its header token says which; nothing was created, formatted or opened.',
  E_VOLUME_KEY_MISMATCH: "The request names a key that the volume's LUKS2 portcullis token (or, for LUKS1, the daemon's record) does not list for any keyslot: an attach is refused before any open is tried, a rekey before any keyslot is tested; nothing was changed.",
  E_REKEY_UNSUPPORTED: 'Rekey refused: the volume has no keyslots to rotate (a plain mapping, or a device without a LUKS header), or it is an ephemeral disk (its key is found by its write-once header token); nothing was changed.',
  E_VOLUME_BUSY: 'The mapping is held open (mounted, or in use by a guest); detach refused. Use ?deferred=true to close it when released.',
  E_KEY_BACKEND_MISMATCH: 'The request names a key backend other than the one this daemon is configured with.',
  E_OVERLOADED: 'Too many requests in flight (limits.max_pending_requests, or limits.max_pending_reads for reads); retry after the Retry-After seconds.',
  E_SHUTTING_DOWN: 'The daemon is stopping and takes no new requests.',
  E_REQUEST_TIMEOUT: 'The request did not finish within limits.request_timeout_seconds; the work may still complete.',
  E_SOCKET_IN_USE: 'Another live daemon answers on the configured socket; refusing to start.',
  E_SOCKET_SETUP: 'The socket could not be created (directory, group, permissions).',
  E_PRIVILEGE_DROP: 'runtime.user is set, but the daemon could not become that user (unknown user, or the kernel refused); it does not serve as root instead.',
  E_HELPER_UNAVAILABLE: 'luks.via is helper, but the privileged helper could not be started or reached, or did not answer; the daemon does not start without it.',
} as const satisfies ErrorRegistry;

export type DaemonErrorCode = keyof typeof daemonErrors;

export const DaemonError = errorFamily('DaemonError', daemonErrors);
export type DaemonError = InstanceType<typeof DaemonError>;

export function daemonError(code: DaemonErrorCode, message: string, options?: ErrorOptions): DaemonError {
  return new DaemonError(code, message, options);
}

/** Every code a request can end with: the daemon's own and those of the layers below it. */
export type ApiErrorCode = DaemonErrorCode | LuksErrorCode | KeyClientErrorCode | NativeErrorCode | keyof typeof commonErrors;

/**
 * The HTTP status of every code a request can end with. Typed over the code
 * union: a code a layer adds without a status here, or a misspelt one, fails
 * to compile instead of silently becoming a 500.
 */
const statusByCode: Record<ApiErrorCode, number> = {
  E_BAD_REQUEST: 400,
  E_LUKS_INVALID_ARGUMENT: 400,
  E_INVALID_ARGUMENT: 400,
  E_KEY_BACKEND_MISMATCH: 400,
  E_CRYPTSETUP_PARAMS: 400,
  E_PEER_FORBIDDEN: 403,
  E_KEY_FORBIDDEN: 403,
  E_ROUTE_NOT_FOUND: 404,
  E_VOLUME_NOT_FOUND: 404,
  E_KEY_NOT_FOUND: 404,
  E_METHOD_NOT_ALLOWED: 405,
  E_MAPPING_CONFLICT: 409,
  E_MAPPING_IN_USE: 409,
  E_VOLUME_BUSY: 409,
  E_MAPPING_FOREIGN: 409,
  E_ERASE_REFUSED: 409,
  E_KEY_AMBIGUOUS: 409,
  E_KEY_OWNED_ELSEWHERE: 409,
  E_VOLUME_KEY_MISMATCH: 409,
  E_REKEY_UNSUPPORTED: 422,
  E_DEVICE_IS_MAPPING: 422,
  E_DEVICE_BUSY: 409,
  E_BODY_TOO_LARGE: 413,
  E_CLIENT_TIMEOUT: 408,
  E_HEADERS_TOO_LARGE: 431,
  E_DEVICE_NOT_FOUND: 422,
  E_DEVICE_CHANGED: 409,
  E_DEVICE_NOT_BLANK: 422,
  E_DEVICE_NOT_PLAIN: 422,
  E_LUKS_HEADER: 422,
  E_DEVICE_UNREADABLE: 422,
  E_DEVICE_WRONG: 422,
  E_WRONG_KEY: 422,
  E_METADATA_ONLY: 422,
  E_NOT_SUPPORTED: 422,
  E_BACKEND_AUTH: 502,
  E_BACKEND_PROTOCOL: 502,
  E_KEY_CREATE_FAILED: 502,
  E_BACKEND_UNAVAILABLE: 503,
  E_OVERLOADED: 503,
  E_SHUTTING_DOWN: 503,
  // The host cannot map anything (health says failing): retry elsewhere or once dm_mod is loaded, never fix the request.
  E_DM_UNAVAILABLE: 503,
  E_CRYPTSETUP_TIMEOUT: 504,
  E_REQUEST_TIMEOUT: 504,
  // Failures of the host or of portcullis itself, not of the request.
  E_CRYPTSETUP_FAILED: 500,
  E_CRYPTSETUP_NOMEM: 500,
  E_OBJECT_WIPED: 500,
  E_BACKEND_INSECURE: 500,
  E_KEYSTORE_INTEGRITY: 500,
  E_KEYSTORE_KEK: 500,
  E_KEYSTORE_FILE: 500,
  E_KMIP_DECODE: 500,
  E_SOCKET_IN_USE: 500,
  E_SOCKET_SETUP: 500,
  E_HELPER_UNAVAILABLE: 503,
  E_PRIVILEGE_DROP: 500,
  E_NATIVE_MISSING: 500,
  E_NATIVE_MLOCK: 500,
  E_NATIVE_CALL_FAILED: 500,
  E_NATIVE_NOTIFY_SOCKET: 500,
  E_NATIVE_NO_FD: 500,
  E_INTERNAL: 500,
};

export function httpStatusOf(code: string): number {
  return Object.hasOwn(statusByCode, code) ? statusByCode[code as ApiErrorCode] : 500;
}
