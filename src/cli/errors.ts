import { errorFamily, type ErrorOptions, type ErrorRegistry } from '../errors.js';

/**
 * Codes of the admin CLI's own failures: talking to portcullisd over its
 * socket. The daemon's codes (docs/errors.md) pass through unchanged.
 */
export const cliErrors = {
  E_DAEMON_SOCKET_MISSING: 'No socket at the path the CLI uses (ENOENT): portcullisd is not running, or listens elsewhere. Nothing was sent.',
  E_DAEMON_SOCKET_DENIED: 'The socket exists but this user may not connect to it (EACCES): not in the socket\'s group. Nothing was sent.',
  E_DAEMON_SOCKET_STALE: 'A socket file exists but nothing listens on it (ECONNREFUSED): portcullisd died without removing it. Nothing was sent.',
  E_DAEMON_UNREACHABLE: 'The socket could not be connected to for another reason (not a socket, backlog full, ...); details.errno names it. Nothing was sent.',
  E_DAEMON_TIMEOUT: 'portcullisd did not answer within --timeout; the request may still complete.',
  E_DAEMON_DISCONNECTED: 'The connection closed before an answer came (portcullisd restarted or crashed); the request may or may not have completed.',
  E_DAEMON_PROTOCOL: 'The answer on the socket is not Socket API v1 JSON (another program on the socket, or an answer over the size limit).',
} as const satisfies ErrorRegistry;

export type CliErrorCode = keyof typeof cliErrors;

/** Failures before anything reached the daemon: the CLI exits 4 for these (docs/cli.md). */
export const unreachableCodes: ReadonlySet<string> = new Set<CliErrorCode>([
  'E_DAEMON_SOCKET_MISSING',
  'E_DAEMON_SOCKET_DENIED',
  'E_DAEMON_SOCKET_STALE',
  'E_DAEMON_UNREACHABLE',
]);

export const CliError = errorFamily('CliError', cliErrors);
export type CliError = InstanceType<typeof CliError>;

export function cliError(code: CliErrorCode, message: string, options?: ErrorOptions): CliError {
  return new CliError(code, message, options);
}
