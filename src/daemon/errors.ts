import { PortcullisError, type ErrorOptions, type ErrorRegistry } from '../errors.js';

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
  E_MAPPING_FOREIGN: 'A crypt mapping of that name exists but portcullis did not make it (crypttab, swap, another tool); it is never attached over, detached, resized or erased through the API.',
  E_ERASE_REFUSED: "Erase refused: the request's project, device or key is not the one the daemon's record names for that ephemeral disk; nothing was erased or deleted.",
  E_VOLUME_BUSY: 'The mapping is held open (mounted, or in use by a guest); detach refused. Use ?deferred=true to close it when released.',
  E_KEY_BACKEND_MISMATCH: 'The request names a key backend other than the one this daemon is configured with.',
  E_OVERLOADED: 'Too many requests in flight (limits.max_pending_requests, or limits.max_pending_reads for reads); retry after the Retry-After seconds.',
  E_SHUTTING_DOWN: 'The daemon is stopping and takes no new requests.',
  E_REQUEST_TIMEOUT: 'The request did not finish within limits.request_timeout_seconds; the work may still complete.',
  E_SOCKET_IN_USE: 'Another live daemon answers on the configured socket; refusing to start.',
  E_SOCKET_SETUP: 'The socket could not be created (directory, group, permissions).',
} as const satisfies ErrorRegistry;

export type DaemonErrorCode = keyof typeof daemonErrors;

export class DaemonError extends PortcullisError {
  override readonly name = 'DaemonError';
  declare readonly code: DaemonErrorCode;

  constructor(code: DaemonErrorCode, message: string, options?: ErrorOptions) {
    super(code, message, options);
  }
}

export function daemonError(code: DaemonErrorCode, message: string, options?: ErrorOptions): DaemonError {
  return new DaemonError(code, message, options);
}

/** HTTP status for every code any layer throws; anything unlisted is a 500. */
const statusByCode: Record<string, number> = {
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
  E_VOLUME_BUSY: 409,
  E_MAPPING_FOREIGN: 409,
  E_ERASE_REFUSED: 409,
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
};

export function httpStatusOf(code: string): number {
  return statusByCode[code] ?? 500;
}
