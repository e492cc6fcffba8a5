import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { daemonError } from '../errors.js';
import type { Admission } from '../limits.js';
import type { Logger } from '../log.js';
import type { LimitsOptions, RolesOptions } from '../../config/daemon-options.js';
import { quoted, send, sendError } from './answer.js';
import { parseBody, readBody } from './body.js';
import { guardConnections, refused, TIMEOUT_SWEEP_MS } from './connections.js';
import type { Peer } from './peer.js';
import { rolesOf, type PeerReader } from './peer.js';
import { routes, type RouteAnswer, type RouteDeps } from './routes.js';
import { checkQuery, parseTarget } from './target.js';

export interface ApiDeps extends RouteDeps {
  roles(): RolesOptions;
  limits(): LimitsOptions;
  readPeer: PeerReader;
  admission: Admission;
  /** Reads that run commands or ask the key manager (routes marked boundedRead): their own, smaller queue. */
  readAdmission: Admission;
  log: Logger;
  /** Whether the daemon is draining: new work is refused. */
  stopping(): boolean;
}

export interface ApiServer {
  server: Server;
  /** Resolves when the work of every admitted mutating request has ended (answered, and not still running past its deadline). */
  drained(): Promise<void>;
  /** Re-applies the connection limits of limits() (after a reload). */
  applyLimits(): void;
  /** Requests answered E_REQUEST_TIMEOUT whose work still runs, each holding its admission slot. */
  readonly overrun: number;
}

const peers = new WeakMap<Socket, Peer | Error>();

/**
 * The socket API's HTTP layer: who is asking (SO_PEERCRED) and what they may
 * do is settled before a byte of the body is read; bodies are bounded in
 * size and time; mutating requests (and reads that spawn processes) pass a
 * bounded queue once their body is in, so slow clients hold a connection at
 * most, never a slot of real work; a slot is held until its work really
 * ends, not just until its answer; every failure is one JSON error with a
 * stable code.
 */
export function createApiServer(deps: ApiDeps): ApiServer {
  let inFlight = 0;
  let overrun = 0;
  const idle: Array<() => void> = [];
  // A unix socket has no virtual hosts: a missing Host header must not earn a bare 400 from Node.
  const server = createServer({ requireHostHeader: false, connectionsCheckingInterval: TIMEOUT_SWEEP_MS }, (req, res) => serve(req, res, false));
  const guard = guardConnections(server, { limits: deps.limits, log: deps.log, metrics: deps.metrics });
  // Expect: 100-continue is answered only once the peer and route are known to be allowed.
  server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => serve(req, res, true));
  server.on('connection', (socket: Socket) => {
    try {
      peers.set(socket, deps.readPeer(socket));
    } catch (err) {
      peers.set(socket, err instanceof Error ? err : new Error(String(err)));
    }
  });

  /** No failure of one request may end the process (an unhandled rejection would): the last line of defence. */
  function serve(req: IncomingMessage, res: ServerResponse, expectsContinue: boolean): void {
    handle(req, res, expectsContinue).catch((err: unknown) => {
      deps.log.error('internal error', { request: `${req.method ?? '?'} ${quoted(req.url ?? '')}`, error: err instanceof Error ? err.message : String(err) });
      res.destroy();
    });
  }

  async function handle(req: IncomingMessage, res: ServerResponse, expectsContinue: boolean): Promise<void> {
    if (refused.has(req.socket)) return;
    const what = `${req.method ?? '?'} ${quoted(req.url ?? '')}`;
    const peer = peers.get(req.socket);
    /** Gives the admission slot back; set once one is taken. */
    let release: (() => void) | undefined;
    let work: Promise<RouteAnswer> | undefined;
    let workEnded = false;
    // A client that asked Expect: 100-continue sends its body only once told to.
    let continued = false;
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
      const { path, query } = parseTarget(req.url);
      const candidates = routes.filter((r) => r.path.test(path));
      const route = candidates.find((r) => r.method === req.method);
      if (route === undefined) {
        if (candidates.length > 0) throw daemonError('E_METHOD_NOT_ALLOWED', `${quoted(req.method ?? '?', 32)} is not allowed on ${quoted(path)} (use ${candidates.map((r) => r.method).join(', ')})`);
        throw daemonError('E_ROUTE_NOT_FOUND', `No API path ${quoted(path)}; see GET /v1/health for a start`, { details: { path: quoted(path) } });
      }
      if (!held.has(route.role)) {
        throw daemonError('E_PEER_FORBIDDEN', `uid ${peer.uid} holds role ${[...held].join(', ')}, but ${req.method} ${path} needs ${route.role}`, {
          details: { uid: peer.uid, needs: route.role },
        });
      }
      checkQuery(query, route.query ?? [], `${route.method} ${path}`);
      // Node stops parsing at an Upgrade: header and the body would never come; the API speaks HTTP/1.1 only.
      if (req.headers.upgrade !== undefined) throw daemonError('E_BAD_REQUEST', `Upgrade: ${quoted(req.headers.upgrade, 32)} is not part of the API (HTTP/1.1 only); refusing`);
      if (route.mutating && deps.stopping()) throw daemonError('E_SHUTTING_DOWN', 'portcullisd is shutting down; retry against the restarted daemon');
      if (expectsContinue) {
        res.writeContinue();
        continued = true;
      }
      const raw = await readBody(req, deps.limits().max_body_bytes);
      let body: unknown;
      if (route.body === undefined) {
        if (raw.length > 0) throw daemonError('E_BAD_REQUEST', `${req.method} ${path} takes no body`);
      } else if (raw.length === 0 && route.body.optional === true) {
        body = undefined;
      } else {
        body = parseBody(raw, route.body.schema);
      }
      // Admission only now, with the whole body in: a client trickling its body holds a connection, not a slot.
      if (route.mutating) {
        if (deps.stopping()) throw daemonError('E_SHUTTING_DOWN', 'portcullisd is shutting down; retry against the restarted daemon');
        if (!deps.admission.tryEnter()) {
          deps.metrics.rejected('overloaded');
          throw daemonError('E_OVERLOADED', `${deps.admission.pending} requests are already in flight (limits.max_pending_requests); retry shortly`, {
            details: { pending: deps.admission.pending },
          });
        }
        inFlight += 1;
        deps.metrics.inFlight.inc();
        release = () => {
          deps.admission.leave();
          deps.metrics.inFlight.dec();
          inFlight -= 1;
          if (inFlight === 0) for (const wake of idle.splice(0)) wake();
        };
      } else if (route.boundedRead === true) {
        // Reads spawn cryptsetup and dmsetup or ask the key manager: bounded apart from attaches, so neither starves the other.
        if (!deps.readAdmission.tryEnter()) {
          deps.metrics.rejected('overloaded_reads');
          throw daemonError('E_OVERLOADED', `${deps.readAdmission.pending} reads are already in flight (limits.max_pending_reads); retry shortly`, {
            details: { pending: deps.readAdmission.pending },
          });
        }
        release = () => deps.readAdmission.leave();
      }
      const params = (route.path.exec(path) ?? []).slice(1);
      const controller = new AbortController();
      work = route.handle({ params, query, body, peer, admin: held.has('admin'), signal: controller.signal }, deps);
      // Handled here, so a rejection after the deadline is never unhandled.
      work.then(
        () => (workEnded = true),
        () => (workEnded = true),
      );
      const answer = await withTimeout(work, controller, deps.limits().request_timeout_seconds);
      send(res, answer);
    } catch (err) {
      sendError(res, err, deps.log, what, !expectsContinue || continued);
    } finally {
      if (release !== undefined) holdUntilEnded(work, workEnded, release, what);
    }
  }

  /**
   * Releases a slot when its work has ended. Work still running at its
   * deadline (an attach mid-format) keeps its slot and the drain count until
   * it ends, counted as overrun: as a stuck command keeps its command slot.
   * Otherwise a SIGTERM drain could finish, and the slot be handed out
   * again, while it still runs.
   */
  function holdUntilEnded(work: Promise<unknown> | undefined, ended: boolean, release: () => void, what: string): void {
    if (work === undefined || ended) {
      release();
      return;
    }
    overrun += 1;
    deps.metrics.overrun.inc();
    deps.log.warn('a request answered at its deadline still runs; it keeps its admission slot until it ends', { request: what, overrun });
    const ends = () => {
      overrun -= 1;
      deps.metrics.overrun.dec();
      deps.log.info('an overrun request ended; its admission slot is free', { request: what, overrun });
      release();
    };
    work.then(ends, ends);
  }

  return {
    server,
    drained: () => (inFlight === 0 ? Promise.resolve() : new Promise<void>((resolve) => idle.push(resolve))),
    applyLimits: guard.applyLimits,
    get overrun() {
      return overrun;
    },
  };
}

/**
 * Races the handler against limits.request_timeout_seconds. At the deadline
 * the caller gets E_REQUEST_TIMEOUT and `controller` aborts: the service
 * checks it between steps, so the work stops at the next step instead of
 * running on. The work itself is not awaited here: its slot is (holdUntilEnded).
 */
async function withTimeout<T>(work: Promise<T>, controller: AbortController, seconds: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const err = daemonError('E_REQUEST_TIMEOUT', `The request did not finish within ${seconds} s (limits.request_timeout_seconds); it stops at its next step, and a step under way may still complete — check GET /v1/volumes`);
      controller.abort(err);
      reject(err);
    }, seconds * 1000);
  });
  try {
    return await Promise.race([work, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
