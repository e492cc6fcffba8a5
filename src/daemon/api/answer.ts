import { STATUS_CODES, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { isPortcullisError } from '../../errors.js';
import { httpStatusOf } from '../errors.js';
import type { Logger } from '../log.js';
import { endAfterLinger } from './linger.js';
import type { RouteAnswer } from './routes.js';

/**
 * How the socket API answers: JSON (or text, for metrics) through Node's
 * response object, and the same error shape written straight to a socket for
 * what never became a request (a malformed one Node's parser refused, a
 * client too slow, a connection over the limit).
 */

export interface ErrorBody {
  code: string;
  message: string;
  details: Record<string, unknown>;
}

export function send(res: ServerResponse, answer: RouteAnswer): void {
  if (!writable(res)) return;
  if (answer.text !== undefined) {
    res.writeHead(answer.status, { 'content-type': answer.text.contentType });
    res.end(answer.text.body);
    return;
  }
  const body = JSON.stringify(answer.json);
  res.writeHead(answer.status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

/** The error body of any thrown value: its own code, or E_INTERNAL (logged once with the real message, which could quote anything). */
export function errorBody(err: unknown, log: Logger, what: string): ErrorBody {
  if (isPortcullisError(err)) return { code: err.code, message: err.message, details: publicDetails(err.details) };
  log.error('internal error', { request: what, error: err instanceof Error ? err.message : String(err) });
  return { code: 'E_INTERNAL', message: 'Internal error; the daemon log has the details', details: {} };
}

/** `unread`: the request's body was not read to its end; the connection closes rather than drain it. */
function headersOf(error: ErrorBody, body: string, unread: boolean): Record<string, string | number> {
  const status = httpStatusOf(error.code);
  const headers: Record<string, string | number> = { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) };
  if (status === 503) headers['retry-after'] = error.code === 'E_BACKEND_UNAVAILABLE' ? 5 : 1;
  if (unread || [403, 408, 413, 431].includes(status)) headers['connection'] = 'close';
  return headers;
}

/**
 * Answers an error. A refusal before the body was read to its end closes the
 * connection (Node would otherwise read and discard the rest of the body,
 * however long, to keep it), but gracefully: after reading on for a bounded
 * while (linger.ts), so a client still writing gets its answer.
 * `bodyComing` false: the client waits for a 100 Continue that was never sent.
 */
export function sendError(res: ServerResponse, err: unknown, log: Logger, what: string, bodyComing = true): void {
  const error = errorBody(err, log, what);
  if (!writable(res) || res.headersSent) return;
  const body = JSON.stringify({ error });
  const unread = !res.req.complete;
  res.writeHead(httpStatusOf(error.code), headersOf(error, body, unread));
  if (unread) endAfterLinger(res, body, bodyComing);
  else res.end(body);
}

/**
 * Writes an error answer to a bare socket and closes it: for input that never
 * reached a request handler. The peer may have sent more than was parsed; it
 * is not read, the connection ends after the answer.
 */
export function sendRawError(socket: Socket, error: ErrorBody): void {
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  const body = JSON.stringify({ error });
  const status = httpStatusOf(error.code);
  const headers = Object.entries(headersOf(error, body, true)).map(([k, v]) => `${k}: ${v}\r\n`);
  socket.end(`HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\n${headers.join('')}\r\n${body}`);
  // A peer that never reads its answer or never closes must not keep the descriptor: end() waits for it.
  setTimeout(() => socket.destroy(), 5000).unref();
}

function writable(res: ServerResponse): boolean {
  return !res.writableEnded && !res.destroyed && res.socket?.destroyed !== true;
}

/** Error details are for operators; stderr of cryptsetup is fine, nothing of type bytes is (there never is, but by construction). */
function publicDetails(details: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(details)) if (!(v instanceof Uint8Array)) out[k] = v;
  return out;
}

/** Caller-supplied text quoted in a message or detail: at most `max` characters, so an answer stays small. */
export function quoted(text: string, max = 200): string {
  return text.length > max ? `${text.slice(0, max)}…` : text;
}
