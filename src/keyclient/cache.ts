/**
 * The key cache (docs/configuration.md, `cache`): a KeyManager in front of
 * another. Only get() is cached; everything else passes through.
 */
import { createHash } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { z } from 'zod';
import { isTransient, keyError, KeyClientError } from './errors.js';
import type { GetOptions, KeyAdoption, KeyManager, RequestContext } from './key-manager.js';
import { metadataOf, objectOfType, type ManagedObject, type ObjectMetadata, type ObjectType } from './objects/index.js';
import { seconds } from './options.js';
import { keystoneTokenIdentity, type TokenIdentity } from './token-identity.js';
import { copySecret, type SecretBuffer, type SecureAllocator } from '../util/secure-memory.js';

/** The `cache` section of the config. */
export const cacheOptionsSchema = z.strictObject({
  /** How long a fetched key is served without asking the backend. @default 300 */
  ttl_seconds: seconds().default(300),
  /** Keys held at most; the least recently used goes first. Negative entries are bounded by it too. @default 1024 */
  max_entries: z.number().int().min(1).max(1_000_000).default(1024),
  /** How long "not found"/"forbidden" is remembered; 0 turns negative caching off. @default 5 */
  negative_ttl_seconds: seconds().default(5),
  /** How long past expiry a key may still be served while the backend is unreachable; 0 = off. @default 0 */
  stale_if_error_seconds: seconds().default(0),
  /** Seconds between sweeps that wipe expired keys; 0 = no timer (sweep() by hand). @default 30 */
  sweep_interval_seconds: seconds()
    .refine((s) => s === 0 || s >= 1, 'must be 0 (no sweep timer) or at least 1')
    .default(30),
  /**
   * Keystone v3 URL. When set, a key fetched with a caller's token is also
   * served to a later token that Keystone validates as the same user,
   * project, roles and application credential or trust (nova sends a new
   * token with every request); docs/nova.md. Unset: entries are per token.
   */
  token_identity_url: z.url({ protocol: /^https?$/, error: 'must be an http:// or https:// URL' }).optional(),
});

export type CacheOptions = z.output<typeof cacheOptionsSchema>;

export interface CacheDeps {
  /** Where the cache keeps its copies and makes the callers'. */
  allocator: SecureAllocator;
  /** Milliseconds; when injected (tests), also the latency clock, and no sweep timer runs. */
  now?: () => number;
  /** Who a token speaks for (tests); default keystoneTokenIdentity(token_identity_url) when that is set. */
  identify?: TokenIdentity;
}

/** Upper bounds (ms) of the backend latency histogram's buckets; +Inf is `count`. */
export const latencyBucketsMs = [1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000] as const;

export interface LatencyHistogram {
  /** Cumulative, Prometheus-style: each bucket counts fetches that took at most `le` ms. */
  buckets: Array<{ le: number; count: number }>;
  count: number;
  /** Milliseconds, summed over all fetches. */
  sum: number;
}

export interface CacheStats {
  /** get()s answered from a fresh entry. */
  hits: number;
  /** get()s that had to ask the backend (one per backend fetch they started). */
  misses: number;
  /** get()s that joined a fetch already under way for the same key. */
  coalesced: number;
  /** get()s answered with an expired key because the backend was unavailable. */
  staleServed: number;
  /** get()s answered from a remembered "not found"/"forbidden". */
  negativeHits: number;
  /** Entries dropped to make room (LRU); explicit evict()/flush() are not counted. */
  evictions: number;
  /** Entries dropped because they expired. */
  expirations: number;
  entries: number;
  backendFetches: number;
  backendLatency: LatencyHistogram;
}

/** Where a get() was answered from. A stale answer during an outage counts as "cache". */
export interface Lookup {
  object: ManagedObject;
  source: 'cache' | 'coalesced' | 'backend';
}

export interface CachingKeyManager extends KeyManager {
  /** get(), also saying whether the backend was asked (for the daemon's key_source and metrics). */
  lookup(ctx: RequestContext, id: string, options?: GetOptions): Promise<Lookup>;
  stats(): CacheStats;
  /** Wipes every entry; returns how many keys were dropped. */
  flush(): number;
  /** Wipes the entries of `id` in every project; returns how many. */
  evict(id: string): number;
  /** Wipes entries expired past the stale-if-error window; returns how many. */
  sweep(): number;
}

interface Entry {
  readonly key: string;
  /** Normalised id, for evict(). */
  readonly id: string;
  readonly type: ObjectType;
  readonly meta: ObjectMetadata;
  readonly secret: SecretBuffer;
  readonly expiresAt: number;
}

interface Negative {
  readonly id: string;
  readonly error: unknown;
  readonly expiresAt: number;
}

interface Waiter {
  readonly metadataOnly: boolean;
  resolve(obj: ManagedObject): void;
  reject(err: unknown): void;
}

/** One backend fetch and everyone waiting for it. */
interface Flight {
  readonly id: string;
  /** Flights and remembered denials are per id as the caller gave it; see lookup(). */
  readonly askKey: string;
  readonly waiters: Waiter[];
  /**
   * The fetch's own deadline, apart from any caller's: it aborts only when
   * every waiter has left at its deadline, so one caller's deadline never
   * fails another's fetch, and a fetch nobody waits for is not left running.
   */
  readonly abandon: AbortController;
}

type Counter = Exclude<keyof CacheStats, 'entries' | 'backendLatency'>;

/**
 * Wraps `inner` in the key cache. The cache keeps one copy of each key in
 * `deps.allocator` memory; every get() returns a fresh copy that the caller
 * owns and zeroizes. Inner errors pass through unchanged.
 * @throws E_BACKEND_UNAVAILABLE from get() after close().
 */
export function cachingKeyManager(inner: KeyManager, options: CacheOptions, deps: CacheDeps): CachingKeyManager {
  const { allocator } = deps;
  const now = deps.now ?? Date.now;
  // Latency wants a monotonic clock; an injected clock stands in so tests can set latencies.
  const clock = deps.now ?? (() => performance.now());
  const ttlMs = options.ttl_seconds * 1000;
  const negativeMs = options.negative_ttl_seconds * 1000;
  const staleMs = options.stale_if_error_seconds * 1000;
  const entries = new Map<string, Entry>(); // iteration order is LRU order, least recent first
  const negatives = new Map<string, Negative>();
  const flights = new Map<string, Flight>();
  const counters: Record<Counter, number> = {
    hits: 0, misses: 0, coalesced: 0, staleServed: 0, negativeHits: 0, evictions: 0, expirations: 0, backendFetches: 0,
  };
  const latency = histogram(latencyBucketsMs);
  const identify = deps.identify ?? (options.token_identity_url === undefined ? undefined : keystoneTokenIdentity(options.token_identity_url, { rememberMs: ttlMs }));
  let closing: Promise<void> | undefined;
  const timer =
    deps.now === undefined && options.sweep_interval_seconds > 0
      ? setInterval(sweep, options.sweep_interval_seconds * 1000).unref() // never what keeps the daemon alive
      : undefined;

  function drop(entry: Entry): void {
    entries.delete(entry.key);
    entry.secret.wipe();
  }

  function expire(entry: Entry): void {
    drop(entry);
    counters.expirations += 1;
  }

  function insert(entry: Entry): void {
    const old = entries.get(entry.key);
    if (old !== undefined) expire(old); // only an expired entry can be there while a fetch ran
    entries.set(entry.key, entry);
    for (const oldest of entries.values()) {
      if (entries.size <= options.max_entries) break;
      drop(oldest);
      counters.evictions += 1;
    }
  }

  function remember(key: string, id: string, error: unknown, t: number): void {
    if (negativeMs <= 0) return;
    negatives.delete(key);
    negatives.set(key, { id, error, expiresAt: t + negativeMs });
    for (const oldest of negatives.keys()) {
      if (negatives.size <= options.max_entries) break;
      negatives.delete(oldest);
    }
  }

  function copyOut(entry: Entry, metadataOnly: boolean): ManagedObject {
    return objectOfType(entry.type, entry.meta, metadataOnly ? undefined : copySecret(allocator, entry.secret.view()));
  }

  async function fetchFromBackend(ctx: RequestContext, id: string, getOptions: GetOptions): Promise<ManagedObject> {
    counters.backendFetches += 1;
    const started = clock();
    try {
      return await inner.get(ctx, id, getOptions);
    } finally {
      latency.observe(clock() - started);
    }
  }

  function adopt(key: string, id: string, obj: ManagedObject): Entry {
    try {
      const secret = copySecret(allocator, obj.bytes());
      return { key, id, type: obj.type, meta: metadataOf(obj), secret, expiresAt: now() + ttlMs };
    } finally {
      // The backend's copy is ours to dispose of: the cache holds exactly one.
      obj.zeroize();
    }
  }

  /**
   * Runs the flight's backend fetch and settles every waiter synchronously,
   * each with its own copy, so no eviction can slip in between the fetch
   * and a waiter's copy.
   */
  async function fly(flight: Flight, ctx: RequestContext, id: string, key: string): Promise<void> {
    let entry: Entry;
    try {
      entry = adopt(key, flight.id, await fetchFromBackend(ctx, id, {}));
    } catch (err) {
      land(flight, key, err);
      return;
    }
    // An evict(), delete() or flush() during the fetch detached the flight: answer its callers, keep nothing.
    const current = flights.get(flight.askKey) === flight;
    if (current) {
      flights.delete(flight.askKey);
      insert(entry);
    }
    // A fetch that every waiter abandoned (leave()) may still land: it is no longer current, so nobody gets a copy and nothing is kept.
    for (const waiter of flight.waiters) settle(waiter, () => copyOut(entry, waiter.metadataOnly));
    if (!current) entry.secret.wipe();
  }

  function land(flight: Flight, key: string, err: unknown): void {
    const current = flights.get(flight.askKey) === flight;
    if (current) flights.delete(flight.askKey);
    const t = now();
    const stale = current ? staleFor(key, err, t) : undefined;
    if (stale !== undefined) {
      counters.staleServed += flight.waiters.length;
      for (const waiter of flight.waiters) settle(waiter, () => copyOut(stale, waiter.metadataOnly));
      return;
    }
    if (current) refused(key, flight.askKey, flight.id, err, t);
    for (const waiter of flight.waiters) waiter.reject(err);
  }

  /** The expired entry that may answer instead of `err`: only while the backend is unreachable, never after a "no". */
  function staleFor(key: string, err: unknown, t: number): Entry | undefined {
    const entry = entries.get(key);
    return entry !== undefined && t < entry.expiresAt + staleMs && isTransient(err) ? entry : undefined;
  }

  /**
   * After a "no" from the backend: forget the key, remember the no. A no to
   * an alias (a href naming the UUID) is remembered for that alias only: it
   * says nothing of the key itself, whose entry stays.
   */
  function refused(key: string, askKey: string, id: string, err: unknown, t: number): void {
    const old = entries.get(key);
    if (isDenial(err)) {
      // The backend said no: a stale key must never outlive that.
      if (old !== undefined && askKey === key) drop(old);
      remember(askKey, id, err, t);
    } else if (old !== undefined && t >= old.expiresAt + staleMs) {
      expire(old);
    }
  }

  /** Waits for `flight`; at `deadline`, leaves it (stale if allowed, else E_BACKEND_UNAVAILABLE). */
  function join(flight: Flight, metadataOnly: boolean, key: string, deadline: AbortSignal | undefined): Promise<ManagedObject> {
    return new Promise((resolve, reject) => {
      const onDeadline = () => leave(flight, waiter, key);
      const done = () => deadline?.removeEventListener('abort', onDeadline);
      const waiter: Waiter = {
        metadataOnly,
        resolve: (obj) => {
          done();
          resolve(obj);
        },
        reject: (err) => {
          done();
          reject(err);
        },
      };
      flight.waiters.push(waiter);
      if (deadline?.aborted === true) onDeadline();
      else deadline?.addEventListener('abort', onDeadline, { once: true });
    });
  }

  /** A waiter's deadline passed: it gets a stale key or the failure now; the last one to leave stops the fetch. */
  function leave(flight: Flight, waiter: Waiter, key: string): void {
    const at = flight.waiters.indexOf(waiter);
    if (at < 0) return;
    flight.waiters.splice(at, 1);
    const err = keyError('E_BACKEND_UNAVAILABLE', "The key manager had not answered when the caller's deadline passed; the request was abandoned", {
      details: { deadline: true },
    });
    const stale = staleFor(key, err, now());
    if (stale !== undefined) {
      counters.staleServed += 1;
      settle(waiter, () => copyOut(stale, waiter.metadataOnly));
    } else {
      waiter.reject(err);
    }
    if (flight.waiters.length > 0) return;
    if (flights.get(flight.askKey) === flight) flights.delete(flight.askKey);
    flight.abandon.abort();
  }

  async function getMetadata(ctx: RequestContext, id: string, key: string, askKey: string, normId: string): Promise<ManagedObject> {
    try {
      return await fetchFromBackend(ctx, id, { metadataOnly: true });
    } catch (err) {
      const t = now();
      const stale = staleFor(key, err, t);
      if (stale !== undefined) {
        counters.staleServed += 1;
        return copyOut(stale, true);
      }
      refused(key, askKey, normId, err, t);
      throw err;
    }
  }

  /** get(), saying where the answer came from. */
  async function lookup(ctx: RequestContext, id: string, getOptions: GetOptions = {}): Promise<Lookup> {
    if (closing !== undefined) throw keyError('E_BACKEND_UNAVAILABLE', 'The key cache was closed', { details: { requestSent: false } });
    const metadataOnly = getOptions.metadataOnly === true;
    const normId = normaliseId(id);
    const who = await whoAsks(ctx);
    const key = cacheKey(inner.name, ctx.projectId, who, normId);
    // A cached key answers its aliases too; but a fetch through an alias, and a "no" to it, stay the alias's own.
    const askKey = normId === id ? key : cacheKey(inner.name, ctx.projectId, who, `as given: ${id}`);
    const t = now();
    const negative = negatives.get(askKey);
    if (negative !== undefined) {
      if (t < negative.expiresAt) {
        counters.negativeHits += 1;
        throw negative.error;
      }
      negatives.delete(askKey);
    }
    const entry = entries.get(key);
    if (entry !== undefined && t < entry.expiresAt) {
      counters.hits += 1;
      entries.delete(key);
      entries.set(key, entry); // now the most recently used
      return { object: copyOut(entry, metadataOnly), source: 'cache' };
    }
    if (entry !== undefined && t >= entry.expiresAt + staleMs) expire(entry);
    const under = flights.get(askKey);
    if (under !== undefined) {
      counters.coalesced += 1;
      return { object: await join(under, metadataOnly, key, ctx.signal), source: 'coalesced' };
    }
    counters.misses += 1;
    // Metadata alone is cheap and holds no secret: fetched, not cached.
    if (metadataOnly) return { object: await getMetadata(ctx, id, key, askKey, normId), source: 'backend' };
    const flight: Flight = { id: normId, askKey, waiters: [], abandon: new AbortController() };
    flights.set(askKey, flight);
    const mine = join(flight, false, key, ctx.signal);
    void fly(flight, { ...ctx, signal: flight.abandon.signal }, id, key);
    return { object: await mine, source: 'backend' };
  }

  /**
   * Whose entry: the service's own (no token), the token's principal when
   * Keystone names one in the request's project, else the token itself.
   * @throws E_BACKEND_AUTH when Keystone says the token is not valid.
   */
  async function whoAsks(ctx: RequestContext): Promise<string> {
    if (ctx.token === undefined) return '';
    const principal = identify === undefined ? undefined : await identify(ctx.token, ctx.signal);
    if (principal !== undefined && principal.projectId === ctx.projectId) return `principal:${principal.key}`;
    return `token:${createHash('sha256').update(ctx.token).digest('base64url')}`;
  }

  function evict(id: string): number {
    const normId = normaliseId(id);
    let count = 0;
    for (const entry of entries.values()) {
      if (entry.id !== normId) continue;
      drop(entry);
      count += 1;
    }
    for (const [key, negative] of negatives) if (negative.id === normId) negatives.delete(key);
    for (const [key, flight] of flights) if (flight.id === normId) flights.delete(key);
    return count;
  }

  function flush(): number {
    const count = entries.size;
    for (const entry of entries.values()) drop(entry);
    negatives.clear();
    flights.clear();
    return count;
  }

  function sweep(): number {
    const t = now();
    let count = 0;
    for (const entry of entries.values()) {
      if (t < entry.expiresAt + staleMs) continue;
      expire(entry);
      count += 1;
    }
    for (const [key, negative] of negatives) if (t >= negative.expiresAt) negatives.delete(key);
    return count;
  }

  return {
    name: `cache(${inner.name})`,
    capabilities: inner.capabilities,
    createKey: (ctx, spec) => inner.createKey(ctx, spec),
    createKeyPair: (ctx, spec) => inner.createKeyPair(ctx, spec),
    store: (ctx, obj) => inner.store(ctx, obj),
    list: (ctx, listOptions) => inner.list(ctx, listOptions),
    health: () => inner.health(),
    ...(inner.consumers === undefined ? {} : { consumers: inner.consumers }),
    // An adopted object was "not found" for its new project a moment ago: that remembered denial goes.
    ...(inner.adoption === undefined ? {} : { adoption: { adopt: async (ctx: RequestContext, id: string) => withEvictDone(evict, id, (inner.adoption as KeyAdoption).adopt(ctx, id)) } }),

    get: async (ctx, id, getOptions = {}) => (await lookup(ctx, id, getOptions)).object,
    lookup,

    async delete(ctx, id) {
      evict(id);
      try {
        await inner.delete(ctx, id);
      } finally {
        // A get() racing the delete may have cached the key again.
        evict(id);
      }
    },

    stats: () => ({ ...counters, entries: entries.size, backendLatency: latency.snapshot() }),
    flush,
    evict,
    sweep,

    close() {
      if (closing === undefined) {
        if (timer !== undefined) clearInterval(timer);
        flush();
        closing = inner.close();
      }
      return closing;
    },
  };
}

async function withEvictDone<T>(evict: (id: string) => number, id: string, work: Promise<T>): Promise<T> {
  try {
    return await work;
  } finally {
    evict(id);
  }
}

function isDenial(err: unknown): boolean {
  return err instanceof KeyClientError && (err.code === 'E_KEY_NOT_FOUND' || err.code === 'E_KEY_FORBIDDEN');
}

function settle(waiter: Waiter, make: () => ManagedObject): void {
  try {
    waiter.resolve(make());
  } catch (err) {
    waiter.reject(err); // e.g. the allocator ran out of locked memory for this caller's copy
  }
}

/**
 * Barbican names a secret both by bare UUID and by href (".../v1/secrets/UUID"),
 * and callers use both; sharing one entry avoids fetching and holding the key
 * twice. A miss still hands the backend the id as given, so it validates it.
 */
export function normaliseId(id: string): string {
  // Only a real secret href is an alias: "x/UUID" or ".../orders/UUID" name something else, or nothing.
  const href = /^https?:\/\/[^/?#\s]+(?:\/[^?#\s]*)?\/v1\/secrets\/([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})\/?$/.exec(id);
  return href?.[1] ?? id;
}

/**
 * (backend, project, who, key id). `who` is empty for the service's own
 * identity, else the caller's principal or token digest: Barbican ACLs can
 * grant a secret to some users of a project and not others, so one caller's
 * fetch must not answer another principal's request.
 */
function cacheKey(backend: string, projectId: string, who: string, id: string): string {
  return JSON.stringify([backend, projectId, who, id]);
}

function histogram(bounds: readonly number[]): { observe(ms: number): void; snapshot(): LatencyHistogram } {
  const counts = bounds.map(() => 0);
  let count = 0;
  let sum = 0;
  return {
    observe(ms) {
      count += 1;
      sum += ms;
      bounds.forEach((le, i) => {
        if (ms <= le) counts[i] = (counts[i] ?? 0) + 1;
      });
    },
    snapshot: () => ({ buckets: bounds.map((le, i) => ({ le, count: counts[i] ?? 0 })), count, sum }),
  };
}
