import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { daemonError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { LimitsOptions } from '../../config/daemon-options.js';
import { errorBody, sendError, sendRawError, type ErrorBody } from './answer.js';
import { lingering } from './linger.js';

/**
 * What a client controls below the request handler, bounded: how many
 * connections it holds, how long it takes to send headers and body, and
 * what Node's HTTP parser refuses. Every refusal is the API's JSON error
 * shape with a stable code, never a bare status line or silence.
 */

/** How often Node sweeps connections for header and body timeouts: the timeouts' granularity. */
export const TIMEOUT_SWEEP_MS = 250;

/** Sockets over max_connections: answered 503 already; a request parsed from them anyway is dropped. */
export const refused = new WeakSet<Socket>();

export interface ConnectionGuard {
  /** Applies limits.header_timeout_seconds and body_timeout_seconds (at start and on reload). */
  applyLimits(): void;
  /** Connections open now. */
  readonly open: number;
}

export function guardConnections(server: Server, deps: { limits(): LimitsOptions; log: Logger; metrics: Metrics }): ConnectionGuard {
  let open = 0;
  function applyLimits(): void {
    const limits = deps.limits();
    // Node measures both from the start of a request (from connect, for a connection's first).
    server.headersTimeout = limits.header_timeout_seconds * 1000;
    server.requestTimeout = (limits.header_timeout_seconds + limits.body_timeout_seconds) * 1000;
    // A kept-alive connection between requests is idle: no longer than a client may take over its headers.
    server.keepAliveTimeout = limits.header_timeout_seconds * 1000;
  }
  applyLimits();

  // Ahead of Node's own listener, so that a connection over the limit is answered before a parser is attached to it.
  server.prependListener('connection', (socket: Socket) => {
    open += 1;
    deps.metrics.connections.inc();
    socket.once('close', () => {
      open -= 1;
      deps.metrics.connections.dec();
    });
    const max = deps.limits().max_connections;
    if (open > max) {
      deps.metrics.rejected('connections');
      sendRawError(socket, errorBody(daemonError('E_OVERLOADED', `${max} connections are already open (limits.max_connections); retry shortly`, { details: { open: open - 1, limit: max } }), deps.log, 'connection'));
      // Nothing this connection sends is read: its requests are never handled.
      socket.pause();
      refused.add(socket);
    }
  });

  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    // The peer has its answer and the rest of its body is being drained (linger.ts): what the parser or the request
    // timeout says of that rest ends the drain; a second answer would be garbage after the first.
    const endLinger = lingering.get(socket);
    if (endLinger !== undefined) {
      endLinger();
      return;
    }
    // The peer went away mid-request: nobody to answer.
    if (err.code === 'ECONNRESET' || err.code === 'EPIPE' || !socket.writable) {
      socket.destroy();
      return;
    }
    const error = clientErrorBody(err, deps.limits());
    deps.metrics.rejected(error.code === 'E_CLIENT_TIMEOUT' ? 'client_timeout' : 'malformed');
    deps.log.debug('refused a malformed or slow request', { code: error.code, reason: err.code ?? err.message });
    sendRawError(socket, error);
  });

  // Node answers an unknown Expect: header with a bare 417; answer it in the API's shape instead.
  server.on('checkExpectation', (req: IncomingMessage, res: ServerResponse) => {
    sendError(res, daemonError('E_BAD_REQUEST', `Expect: ${String(req.headers['expect']).slice(0, 64)} is not supported (only 100-continue); refusing`), deps.log, 'expectation');
  });

  // Without a listener Node drops a CONNECT request's connection unanswered.
  server.on('connect', (req: IncomingMessage, socket: Socket) => {
    sendRawError(socket, errorBody(daemonError('E_METHOD_NOT_ALLOWED', 'CONNECT is not part of the API; refusing'), deps.log, 'connect'));
  });

  return {
    applyLimits,
    get open() {
      return open;
    },
  };
}

/** The API error for what Node's HTTP parser (llhttp) or its timeouts refused. */
function clientErrorBody(err: NodeJS.ErrnoException, limits: LimitsOptions): ErrorBody {
  const reason = err.code ?? 'unknown';
  if (reason === 'ERR_HTTP_REQUEST_TIMEOUT') {
    return {
      code: 'E_CLIENT_TIMEOUT',
      message: `The request did not arrive in time (headers within limits.header_timeout_seconds = ${limits.header_timeout_seconds} s, the body within ${limits.body_timeout_seconds} s more); closing the connection`,
      details: { header_timeout_seconds: limits.header_timeout_seconds, body_timeout_seconds: limits.body_timeout_seconds },
    };
  }
  if (reason === 'HPE_HEADER_OVERFLOW') {
    return { code: 'E_HEADERS_TOO_LARGE', message: 'The request line and headers exceed 16 KiB; refusing', details: { reason } };
  }
  // llhttp's own words ("Invalid method encountered"), which never quote the input.
  const said = err.message.replace(/^Parse Error:?\s*/, '') || 'malformed';
  return { code: 'E_BAD_REQUEST', message: `Malformed HTTP request (${reason}: ${said}); refusing`, details: { reason } };
}
