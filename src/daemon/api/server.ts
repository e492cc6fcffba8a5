import type { ZodType } from 'zod';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { isPortcullisError, PortcullisError } from '../../errors.js';
import { daemonError, httpStatusOf } from '../errors.js';
import type { admission } from '../limits.js';
import type { Logger } from '../log.js';
import type { LimitsOptions, RolesOptions } from '../options.js';
import type { Peer } from './peer.js';
import { rolesOf, type PeerReader } from './peer.js';
import { routes, type RouteAnswer, type RouteDeps } from './routes.js';

export interface ApiDeps extends RouteDeps {
  roles(): RolesOptions;
  limits(): LimitsOptions;
  readPeer: PeerReader;
  admission: ReturnType<typeof admission>;
  log: Logger;
  /** Whether the daemon is draining: new work is refused. */
  stopping(): boolean;
}

export interface ApiServer {
  server: Server;
  /** Resolves when every admitted mutating request has been answered. */
  drained(): Promise<void>;
}

const peers = new WeakMap<Socket, Peer | Error>();

/**
 * The socket API's HTTP layer: who is asking (SO_PEERCRED) and what they may
 * do is settled before a byte of the body is read; bodies are bounded;
 * mutating requests pass a bounded queue; every failure is one JSON error
 * with a stable code.
 */
export function createApiServer(deps: ApiDeps): ApiServer {
  let inFlight = 0;
  let idle: Array<() => void> = [];
  const server = createServer({ requestTimeout: 0, headersTimeout: 30_000 }, (req, res) => void handle(req, res));
  server.on('connection', (socket: Socket) => {
    try {
      peers.set(socket, deps.readPeer(socket));
    } catch (err) {
      peers.set(socket, err instanceof Error ? err : new Error(String(err)));
    }
  });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://portcullis');
    const peer = peers.get(req.socket);
    let admitted = false;
    try {
      if (peer === undefined || peer instanceof Error) {
        throw daemonError('E_PEER_FORBIDDEN', 'Cannot read the credentials of the connecting process; refusing', { details: { reason: peer?.message ?? 'none' } });
      }
      const held = rolesOf(peer, deps.roles());
      if (held.size === 0) {
        throw daemonError('E_PEER_FORBIDDEN', `uid ${peer.uid} (gid ${peer.gid}) holds no portcullis role; add it to roles.agent or roles.admin in the config`, {
          details: { uid: peer.uid, gid: peer.gid },
        });
      }
      const candidates = routes.filter((r) => r.path.test(url.pathname));
      const route = candidates.find((r) => r.method === req.method);
      if (route === undefined) {
        if (candidates.length > 0) throw daemonError('E_METHOD_NOT_ALLOWED', `${req.method ?? '?'} is not allowed on ${url.pathname} (use ${candidates.map((r) => r.method).join(', ')})`);
        throw daemonError('E_ROUTE_NOT_FOUND', `No API path ${url.pathname}; see GET /v1/health for a start`, { details: { path: url.pathname } });
      }
      if (!held.has(route.role)) {
        throw daemonError('E_PEER_FORBIDDEN', `uid ${peer.uid} holds role ${[...held].join(', ')}, but ${req.method} ${url.pathname} needs ${route.role}`, {
          details: { uid: peer.uid, needs: route.role },
        });
      }
      if (route.mutating) {
        if (deps.stopping()) throw daemonError('E_SHUTTING_DOWN', 'portcullisd is shutting down; retry against the restarted daemon');
        if (!deps.admission.tryEnter()) {
          deps.metrics.rejected('overloaded');
          throw daemonError('E_OVERLOADED', `${deps.admission.pending} requests are already in flight (limits.max_pending_requests); retry shortly`, {
            details: { pending: deps.admission.pending },
          });
        }
        admitted = true;
        inFlight += 1;
        deps.metrics.inFlight.inc();
      }
      const raw = await readBody(req, deps.limits().max_body_bytes);
      let body: unknown;
      if (route.body === undefined) {
        if (raw.length > 0) throw daemonError('E_BAD_REQUEST', `${req.method} ${url.pathname} takes no body`);
      } else if (raw.length === 0 && route.body.optional === true) {
        body = undefined;
      } else {
        body = parseBody(raw, route.body.schema);
      }
      const params = (route.path.exec(url.pathname) ?? []).slice(1);
      const answer = await withTimeout((signal) => route.handle({ params, query: url.searchParams, body, peer, admin: held.has('admin'), signal }, deps), deps.limits().request_timeout_seconds);
      send(res, answer);
    } catch (err) {
      sendError(res, err, deps.log, `${req.method ?? '?'} ${url.pathname}`);
    } finally {
      if (admitted) {
        deps.admission.leave();
        deps.metrics.inFlight.dec();
        inFlight -= 1;
        if (inFlight === 0) for (const wake of idle.splice(0)) wake();
      }
    }
  }

  return {
    server,
    drained: () => (inFlight === 0 ? Promise.resolve() : new Promise<void>((resolve) => idle.push(resolve))),
  };
}

/** Reads at most `limit` bytes; a declared or actual larger body is refused without reading on. */
function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length'] ?? '0');
  if (declared > limit) return Promise.reject(tooLarge(limit, declared));
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        req.pause();
        reject(tooLarge(limit, size));
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function tooLarge(limit: number, size: number): PortcullisError {
  return daemonError('E_BODY_TOO_LARGE', `Request body of ${size} bytes exceeds limits.max_body_bytes (${limit}); not read`, { details: { limit, size } });
}

function parseBody(raw: Buffer, schema: ZodType): unknown {
  let json: unknown;
  try {
    json = JSON.parse(raw.toString('utf8'));
  } catch {
    throw daemonError('E_BAD_REQUEST', 'Request body is not valid JSON');
  }
  const result = schema.safeParse(json);
  if (!result.success) {
    const issues = result.error.issues.map((i) => ({ path: i.path.map(String).join('.'), message: i.code === 'unrecognized_keys' ? `unknown key(s) ${i.keys.join(', ')}` : i.message }));
    throw daemonError('E_BAD_REQUEST', `Request body is invalid: ${issues.map((i) => `${i.path || '(body)'}: ${i.message}`).join('; ')}`, { details: { issues } });
  }
  return result.data;
}

/**
 * Races the handler against limits.request_timeout_seconds. At the deadline
 * the caller gets E_REQUEST_TIMEOUT and `signal` aborts: the service checks
 * it between steps, so the work stops at the next step instead of running on.
 */
async function withTimeout<T>(work: (signal: AbortSignal) => Promise<T>, seconds: number): Promise<T> {
  const controller = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const err = daemonError('E_REQUEST_TIMEOUT', `The request did not finish within ${seconds} s (limits.request_timeout_seconds); it stops at its next step, and a step under way may still complete — check GET /v1/volumes`);
      controller.abort(err);
      reject(err);
    }, seconds * 1000);
  });
  try {
    return await Promise.race([work(controller.signal), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function send(res: ServerResponse, answer: RouteAnswer): void {
  if (answer.text !== undefined) {
    res.writeHead(answer.status, { 'content-type': answer.text.contentType });
    res.end(answer.text.body);
    return;
  }
  const body = JSON.stringify(answer.json);
  res.writeHead(answer.status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

function sendError(res: ServerResponse, err: unknown, log: Logger, what: string): void {
  let error: { code: string; message: string; details: Record<string, unknown> };
  if (isPortcullisError(err)) {
    error = { code: err.code, message: err.message, details: publicDetails(err.details) };
  } else {
    // Unclassified: log the real message once, answer a generic one (it could quote anything).
    log.error('internal error', { request: what, error: err instanceof Error ? err.message : String(err) });
    error = { code: 'E_INTERNAL', message: 'Internal error; the daemon log has the details', details: {} };
  }
  const status = httpStatusOf(error.code);
  const body = JSON.stringify({ error });
  const headers: Record<string, string | number> = { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) };
  if (status === 503) headers['retry-after'] = error.code === 'E_BACKEND_UNAVAILABLE' ? 5 : 1;
  // A refused request's body is never read; close the connection rather than drain it.
  if (status === 403 || status === 413) headers['connection'] = 'close';
  if (res.headersSent) return;
  res.writeHead(status, headers);
  res.end(body);
}

/** Error details are for operators; stderr of cryptsetup is fine, nothing of type bytes is (there never is, but by construction). */
function publicDetails(details: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(details)) if (!(v instanceof Uint8Array)) out[k] = v;
  return out;
}

