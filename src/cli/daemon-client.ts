import { lstatSync } from 'node:fs';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { PortcullisError } from '../errors.js';
import { cliError, type CliError } from './errors.js';

/**
 * A small typed client of Socket API v1 (docs/api.md): HTTP/1.1 and JSON over
 * the daemon's unix socket. Answer types are in src/api/wire.ts.
 */

export type Method = 'GET' | 'PUT' | 'POST' | 'DELETE';

export interface DaemonClientOptions {
  /** Whole-request bound, connect to last byte. @default 330 000 (attaches under emulation take minutes) */
  timeoutMs?: number;
  /** Where the socket path came from ("--socket", "socket.path in FILE"), quoted in connection errors. */
  origin?: string;
}

export interface RequestOptions {
  /** Non-2xx statuses whose body is an answer, not an error (GET /v1/health is 503 while failing). */
  answerStatuses?: readonly number[];
}

export interface DaemonClient {
  readonly socketPath: string;
  /**
   * Sends one request and parses the JSON answer.
   * @throws PortcullisError with the daemon's code, message and details on a non-2xx answer
   *   (details gain `http_status`, and `retry_after_seconds` when the daemon sent Retry-After)
   * @throws CliError E_DAEMON_SOCKET_MISSING, E_DAEMON_SOCKET_DENIED, E_DAEMON_SOCKET_STALE,
   *   E_DAEMON_UNREACHABLE (nothing was sent); E_DAEMON_TIMEOUT, E_DAEMON_DISCONNECTED, E_DAEMON_PROTOCOL
   */
  request<T>(method: Method, path: string, body?: unknown, options?: RequestOptions): Promise<T>;
}

export const DEFAULT_TIMEOUT_MS = 330_000;
/** No answer of API v1 comes near this; a larger one is not from portcullisd. */
const MAX_ANSWER_BYTES = 16 * 1024 * 1024;

export function daemonClient(socketPath: string, options: DaemonClientOptions = {}): DaemonClient {
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const where = options.origin === undefined ? socketPath : `${socketPath} (${options.origin})`;

  return {
    socketPath,
    request<T>(method: Method, path: string, body?: unknown, requestOptions: RequestOptions = {}): Promise<T> {
      const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body), 'utf8');
      return new Promise<T>((resolve, reject) => {
        let connected = false;
        let settled = false;
        const finish = (err: unknown, value?: T) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          if (err === undefined) resolve(value as T);
          else reject(err);
        };
        const req = httpRequest({
          socketPath,
          path,
          method,
          agent: false,
          headers: {
            host: 'portcullis',
            accept: 'application/json',
            ...(payload === undefined ? {} : { 'content-type': 'application/json', 'content-length': payload.length }),
          },
        });
        const timer = setTimeout(() => {
          req.destroy(
            cliError('E_DAEMON_TIMEOUT', `No answer from portcullisd on ${where} within ${timeoutMs / 1000} s (--timeout); ${method} ${path} may still complete: look with 'portcullis volumes' before retrying`, {
              details: { socket: socketPath, method, path, timeout_seconds: timeoutMs / 1000 },
            }),
          );
        }, timeoutMs);
        req.on('socket', (socket) => socket.once('connect', () => (connected = true)));
        req.on('error', (err) => finish(connected ? lostConnection(err, where, socketPath, method, path) : connectFailure(err, where, socketPath)));
        req.on('response', (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (chunk: Buffer) => {
            size += chunk.length;
            if (size > MAX_ANSWER_BYTES) {
              req.destroy(cliError('E_DAEMON_PROTOCOL', `The answer on ${where} exceeds ${MAX_ANSWER_BYTES} bytes; is portcullisd what listens there?`, { details: { socket: socketPath } }));
              return;
            }
            chunks.push(chunk);
          });
          res.on('error', (err) => finish(lostConnection(err, where, socketPath, method, path)));
          res.on('end', () => {
            try {
              finish(undefined, answerOf<T>(res, Buffer.concat(chunks), requestOptions, where, socketPath));
            } catch (err) {
              finish(err);
            }
          });
        });
        req.end(payload);
      });
    },
  };
}

function answerOf<T>(res: IncomingMessage, raw: Buffer, options: RequestOptions, where: string, socketPath: string): T {
  const status = res.statusCode ?? 0;
  const text = raw.toString('utf8');
  let parsed: unknown;
  try {
    parsed = text === '' ? undefined : (JSON.parse(text) as unknown);
  } catch {
    parsed = undefined;
  }
  const isAnswer = (status >= 200 && status < 300) || (options.answerStatuses ?? []).includes(status);
  const error = isRecord(parsed) && isRecord(parsed['error']) ? parsed['error'] : undefined;
  // An error body wins even on an answer status: a 503 may be E_SHUTTING_DOWN rather than a health answer.
  if (isAnswer && error === undefined && isRecord(parsed)) return parsed as T;
  if (status >= 300 && error !== undefined && typeof error['code'] === 'string' && typeof error['message'] === 'string') {
    const details: Record<string, unknown> = { ...(isRecord(error['details']) ? error['details'] : {}), http_status: status };
    const retryAfter = Number(res.headers['retry-after']);
    if (Number.isFinite(retryAfter) && retryAfter >= 0) details['retry_after_seconds'] = retryAfter;
    return throwDaemonError(error['code'], error['message'], details);
  }
  throw cliError('E_DAEMON_PROTOCOL', `Unexpected answer on ${where}: HTTP ${status} ${JSON.stringify(text.slice(0, 200))}; is portcullisd what listens there?`, {
    details: { socket: socketPath, http_status: status },
  });
}

function throwDaemonError(code: string, message: string, details: Record<string, unknown>): never {
  throw new PortcullisError(code, message, { details });
}

/** Failures before the request could be sent: nothing reached the daemon. */
function connectFailure(err: Error, where: string, socketPath: string): CliError {
  if (err instanceof PortcullisError) return err as CliError;
  const errno = (err as NodeJS.ErrnoException).code ?? 'error';
  const details = { socket: socketPath, errno };
  switch (errno) {
    case 'ENOENT':
    case 'ENOTDIR':
      return cliError('E_DAEMON_SOCKET_MISSING', `No daemon socket at ${where}: is portcullisd running? (systemctl status portcullis)`, { details, cause: err });
    case 'EACCES':
    case 'EPERM':
      return cliError('E_DAEMON_SOCKET_DENIED', `Permission denied on ${where}: add your user to the socket's group (ls -l ${socketPath})`, { details, cause: err });
    case 'ECONNREFUSED':
      if (!isSocket(socketPath)) {
        return cliError('E_DAEMON_UNREACHABLE', `${where} is not a socket; check --socket or socket.path in the config`, { details, cause: err });
      }
      return cliError('E_DAEMON_SOCKET_STALE', `Stale socket at ${where}: nothing listens; portcullisd died without removing it (systemctl restart portcullis)`, { details, cause: err });
    default:
      return cliError('E_DAEMON_UNREACHABLE', `Cannot connect to portcullisd on ${where} (${errno})`, { details, cause: err });
  }
}

/** Failures after the request may have been sent: it may or may not have taken effect. */
function lostConnection(err: Error, where: string, socketPath: string, method: string, path: string): CliError {
  if (err instanceof PortcullisError) return err as CliError;
  const errno = (err as NodeJS.ErrnoException).code ?? 'error';
  return cliError('E_DAEMON_DISCONNECTED', `The connection to portcullisd on ${where} closed before it answered (${errno}); ${method} ${path} may or may not have completed: look with 'portcullis volumes'`, {
    details: { socket: socketPath, errno, method, path },
    cause: err,
  });
}

function isSocket(path: string): boolean {
  try {
    return lstatSync(path).isSocket();
  } catch {
    return false;
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
