import type { z } from 'zod';
import { daemonError } from '../errors.js';
import { quoted } from './answer.js';
import type { CachingKeyManager } from '../../keyclient/cache.js';
import type { Metrics } from '../metrics.js';
import type { EphemeralService } from '../service/ephemeral.js';
import type { Peer } from './peer.js';
import type { VolumeService } from '../service/volumes.js';
import type { Role } from './peer.js';
import { attachBodySchema, ephemeralAttachBodySchema, ephemeralDetachBodySchema, ID_PATTERN, NAME_PATTERN, rekeyBodySchema, resizeBodySchema, type CacheAnswer, type HealthAnswer } from '../../api/wire.js';

/** What the routes use of each service: declared here, so a test can serve the API with fakes. */
export interface RouteDeps {
  volumes: Pick<VolumeService, 'attach' | 'detach' | 'resize' | 'rekey' | 'list' | 'volume'>;
  ephemeral: Pick<EphemeralService, 'attach' | 'detach'>;
  health(): Promise<HealthAnswer>;
  keys(): Pick<CachingKeyManager, 'stats' | 'flush' | 'evict'>;
  metrics: Metrics;
}

export interface RouteInput {
  params: string[];
  query: URLSearchParams;
  /** The parsed, validated body, when the route has a schema. */
  body: unknown;
  peer: Peer;
  /** The peer holds the admin role (sees foreign mappings). */
  admin: boolean;
  /** Aborts at the request's deadline (limits.request_timeout_seconds). */
  signal?: AbortSignal;
}

/** What a handler answers: JSON, or text (metrics), with a status. */
export interface RouteAnswer {
  status: number;
  json?: unknown;
  text?: { body: string; contentType: string };
}

export interface Route {
  method: 'GET' | 'PUT' | 'POST' | 'DELETE';
  path: RegExp;
  role: Role;
  /** Mutating routes pass admission (the bounded queue) and drain on shutdown. */
  mutating: boolean;
  /** A read that runs commands or asks the key manager: passes the read admission (limits.max_pending_reads). */
  boundedRead?: true;
  /** Body schema; absent: the route takes no body (one is refused). `optional`: an empty body is fine. */
  body?: { schema: z.ZodType; optional?: boolean };
  /** Query parameters the route takes (flags); any other is refused. */
  query?: readonly string[];
  handle(input: RouteInput, deps: RouteDeps): Promise<RouteAnswer>;
}

const NAME = `(${NAME_PATTERN.source.slice(1, -1)})`;
const ID = `(${ID_PATTERN.source.slice(1, -1)})`;
const exact = (path: string) => new RegExp(`^${path}$`);
const ok = (json: unknown): RouteAnswer => ({ status: 200, json });

function flag(query: URLSearchParams, name: string): boolean {
  const value = query.get(name);
  if (value === null || value === 'false' || value === '0') return false;
  if (value === '' || value === 'true' || value === '1') return true;
  throw daemonError('E_BAD_REQUEST', `Query parameter ${name} must be true or false, not "${quoted(value, 64)}"`, { details: { [name]: quoted(value, 64) } });
}

const param = (input: RouteInput, i: number): string => input.params[i] ?? '';

/** Socket API v1 (docs/api.md). The table is the API: one row per method and path. */
export const routes: readonly Route[] = [
  {
    method: 'PUT', path: exact(`/v1/volumes/${NAME}`), role: 'agent', mutating: true, body: { schema: attachBodySchema },
    handle: async (input, deps) => ok(await deps.volumes.attach(param(input, 0), input.body as z.output<typeof attachBodySchema>, input.peer, input.signal)),
  },
  {
    method: 'DELETE', path: exact(`/v1/volumes/${NAME}`), role: 'agent', mutating: true, query: ['deferred'],
    handle: async (input, deps) => ok(await deps.volumes.detach(param(input, 0), { deferred: flag(input.query, 'deferred') })),
  },
  {
    method: 'POST', path: exact(`/v1/volumes/${NAME}/resize`), role: 'agent', mutating: true, body: { schema: resizeBodySchema },
    handle: async (input, deps) => ok(await deps.volumes.resize(param(input, 0), input.body as z.output<typeof resizeBodySchema>, input.peer)),
  },
  {
    method: 'POST', path: exact(`/v1/volumes/${NAME}/rekey`), role: 'agent', mutating: true, body: { schema: rekeyBodySchema },
    handle: async (input, deps) => ok(await deps.volumes.rekey(param(input, 0), input.body as z.output<typeof rekeyBodySchema>, input.peer, input.signal)),
  },
  {
    method: 'GET', path: exact('/v1/volumes'), role: 'agent', mutating: false, boundedRead: true,
    handle: async (input, deps) => ok({ volumes: await deps.volumes.list({ admin: input.admin }) }),
  },
  {
    method: 'GET', path: exact(`/v1/volumes/${NAME}`), role: 'agent', mutating: false, boundedRead: true,
    handle: async (input, deps) => ok(await deps.volumes.volume(param(input, 0), { admin: input.admin })),
  },
  {
    method: 'PUT', path: exact(`/v1/ephemeral/${ID}/${ID}`), role: 'agent', mutating: true, body: { schema: ephemeralAttachBodySchema },
    handle: async (input, deps) => ok(await deps.ephemeral.attach(param(input, 0), param(input, 1), input.body as z.output<typeof ephemeralAttachBodySchema>, input.peer, input.signal)),
  },
  {
    method: 'DELETE', path: exact(`/v1/ephemeral/${ID}/${ID}`), role: 'agent', mutating: true, body: { schema: ephemeralDetachBodySchema, optional: true }, query: ['erase'],
    handle: async (input, deps) =>
      ok(await deps.ephemeral.detach(param(input, 0), param(input, 1), flag(input.query, 'erase'), input.body as z.output<typeof ephemeralDetachBodySchema> | undefined, input.peer)),
  },
  {
    method: 'GET', path: exact('/v1/health'), role: 'agent', mutating: false, boundedRead: true,
    handle: async (_input, deps) => {
      const health = await deps.health();
      return { status: health.status === 'failing' ? 503 : 200, json: health };
    },
  },
  {
    method: 'GET', path: exact('/v1/cache'), role: 'admin', mutating: false,
    handle: async (_input, deps) => {
      const s = deps.keys().stats();
      const answer: CacheAnswer = {
        hits: s.hits, misses: s.misses, coalesced: s.coalesced, stale_served: s.staleServed, negative_hits: s.negativeHits,
        evictions: s.evictions, expirations: s.expirations, entries: s.entries, backend_fetches: s.backendFetches,
      };
      return ok(answer);
    },
  },
  {
    method: 'DELETE', path: exact('/v1/cache'), role: 'admin', mutating: false,
    handle: async (_input, deps) => ok({ flushed: deps.keys().flush() }),
  },
  {
    method: 'DELETE', path: /^\/v1\/cache\/([A-Za-z0-9_.:-]{1,512})$/, role: 'admin', mutating: false,
    handle: async (input, deps) => ok({ evicted: deps.keys().evict(param(input, 0)) }),
  },
  {
    method: 'GET', path: exact('/metrics'), role: 'admin', mutating: false,
    handle: async (_input, deps) => ({ status: 200, text: { body: await deps.metrics.text(), contentType: deps.metrics.contentType } }),
  },
];
