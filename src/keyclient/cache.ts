/**
 * The key cache (docs/configuration.md, `cache`): a KeyManager in front of
 * another. Only get() is cached; everything else passes through. Its entries
 * live in cache-entries.ts, its options and figures in cache-options.ts.
 */
import { createHash } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { cacheKey, entryStore, normaliseId, type Counter, type Entry } from './cache-entries.js';
import { histogram, latencyBucketsMs, type CacheDeps, type CacheOptions, type CacheStats } from './cache-options.js';
import { isTransient, keyError, KeyClientError } from './errors.js';
import type { GetOptions, KeyManager, RequestContext } from './key-manager.js';
import type { ManagedObject } from './objects/index.js';
import { keystoneTokenIdentity } from './token-identity.js';

export { cacheOptionsSchema, latencyBucketsMs, type CacheDeps, type CacheOptions, type CacheStats, type LatencyHistogram } from './cache-options.js';
export { normaliseId } from './cache-entries.js';

/** Where a get() was answered from. A stale answer during an outage counts as "cache". */
export interface Lookup {
  object: ManagedObject;
  source: 'cache' | 'coalesced' | 'backend';
}

export interface LookupOptions extends GetOptions {
  /**
   * The cache's own bytes instead of a copy: no allocation, no copy. The
   * object's zeroize() gives them back and makes its view unusable; the
   * entry is not wiped before that, even when evicted. Always zeroize it.
   */
  lend?: boolean;
}

export interface CachingKeyManager extends KeyManager {
  /** get(), also saying whether the backend was asked (for the daemon's key_source and metrics). */
  lookup(ctx: RequestContext, id: string, options?: LookupOptions): Promise<Lookup>;
  /**
   * Lends the key to `use` without copying it; when `use` returns (or its
   * promise settles) the view is given back and unusable (detached in locked
   * memory: length 0). Resolves with what `use` returned.
   */
  withKey<T>(ctx: RequestContext, id: string, use: (key: ManagedObject, source: Lookup['source']) => T): Promise<Awaited<T>>;
  stats(): CacheStats;
  /** Wipes every entry; returns how many keys were dropped. */
  flush(): number;
  /** Wipes the entries of `id` in every project; returns how many. */
  evict(id: string): number;
  /** Wipes entries expired past the stale-if-error window; returns how many. */
  sweep(): number;
}

/** What a caller gets from an entry: metadata alone, a copy it owns, or a lent view. */
type Mode = 'meta' | 'copy' | 'lend';

interface Waiter {
  readonly mode: Mode;
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

/**
 * Wraps `inner` in the key cache. The cache keeps one copy of each key in
 * `deps.allocator` memory; get() returns a fresh copy that the caller owns
 * and zeroizes, withKey() and lookup({ lend }) lend the cache's own.
 * Inner errors pass through unchanged.
 * @throws E_BACKEND_UNAVAILABLE from get() after close().
 */
export function cachingKeyManager(inner: KeyManager, options: CacheOptions, deps: CacheDeps): CachingKeyManager {
  const now = deps.now ?? Date.now;
  // Latency wants a monotonic clock; an injected clock stands in so tests can set latencies.
  const clock = deps.now ?? (() => performance.now());
  const ttlMs = options.ttl_seconds * 1000;
  const staleMs = options.stale_if_error_seconds * 1000;
  const flights = new Map<string, Flight>();
  const counters: Record<Counter, number> = {
    hits: 0, misses: 0, coalesced: 0, staleServed: 0, negativeHits: 0, evictions: 0, expirations: 0, backendFetches: 0,
  };
  const store = entryStore(options, deps.allocator, counters);
  const { entries } = store;
  const latency = histogram(latencyBucketsMs);
  const identify = deps.identify ?? (options.token_identity_url === undefined ? undefined : keystoneTokenIdentity(options.token_identity_url, { rememberMs: ttlMs }));
  let closing: Promise<void> | undefined;
  const timer =
    deps.now === undefined && options.sweep_interval_seconds > 0
      ? setInterval(sweep, options.sweep_interval_seconds * 1000).unref() // never what keeps the daemon alive
      : undefined;

  function out(entry: Entry, mode: Mode): ManagedObject {
    return mode === 'lend' ? store.lendOut(entry) : store.copyOut(entry, mode === 'meta');
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

  /**
   * Runs the flight's backend fetch and settles every waiter synchronously,
   * each with its own copy or view, so no eviction can slip in between the
   * fetch and a waiter's answer.
   */
  async function fly(flight: Flight, ctx: RequestContext, id: string, key: string): Promise<void> {
    let entry: Entry;
    try {
      entry = store.adopt(key, flight.id, await fetchFromBackend(ctx, id, {}), now() + ttlMs);
    } catch (err) {
      land(flight, key, err);
      return;
    }
    // An evict(), delete() or flush() during the fetch detached the flight: answer its callers, keep nothing.
    const current = flights.get(flight.askKey) === flight;
    if (current) {
      flights.delete(flight.askKey);
      store.insert(entry);
    }
    // A fetch that every waiter abandoned (leave()) may still land: it is no longer current, so nobody gets a copy and nothing is kept.
    for (const waiter of flight.waiters) settle(waiter, () => out(entry, waiter.mode));
    if (!current) store.discard(entry);
  }

  function land(flight: Flight, key: string, err: unknown): void {
    const current = flights.get(flight.askKey) === flight;
    if (current) flights.delete(flight.askKey);
    const t = now();
    const stale = current ? store.staleFor(key, isTransient(err), t) : undefined;
    if (stale !== undefined) {
      counters.staleServed += flight.waiters.length;
      for (const waiter of flight.waiters) settle(waiter, () => out(stale, waiter.mode));
      return;
    }
    if (current) refused(key, flight.askKey, flight.id, err, t);
    for (const waiter of flight.waiters) waiter.reject(err);
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
      if (old !== undefined && askKey === key) store.drop(old);
      store.remember(askKey, id, err, t);
    } else if (old !== undefined && t >= old.expiresAt + staleMs) {
      store.expire(old);
    }
  }

  /** Waits for `flight`; at `deadline`, leaves it (stale if allowed, else E_BACKEND_UNAVAILABLE). */
  function join(flight: Flight, mode: Mode, key: string, deadline: AbortSignal | undefined): Promise<ManagedObject> {
    return new Promise((resolve, reject) => {
      const onDeadline = () => leave(flight, waiter, key);
      const done = () => deadline?.removeEventListener('abort', onDeadline);
      const waiter: Waiter = {
        mode,
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
    const stale = store.staleFor(key, isTransient(err), now());
    if (stale !== undefined) {
      counters.staleServed += 1;
      settle(waiter, () => out(stale, waiter.mode));
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
      const stale = store.staleFor(key, isTransient(err), t);
      if (stale !== undefined) {
        counters.staleServed += 1;
        return store.copyOut(stale, true);
      }
      refused(key, askKey, normId, err, t);
      throw err;
    }
  }

  /** get(), saying where the answer came from. A caller without a token skips the await on whoAsks(): the hit path stays synchronous up to its answer. */
  function lookup(ctx: RequestContext, id: string, getOptions: LookupOptions = {}): Promise<Lookup> {
    if (closing !== undefined) return Promise.reject(keyError('E_BACKEND_UNAVAILABLE', 'The key cache was closed', { details: { requestSent: false } }));
    const mode: Mode = getOptions.metadataOnly === true ? 'meta' : getOptions.lend === true ? 'lend' : 'copy';
    if (ctx.token === undefined) {
      try {
        return answer(ctx, id, mode, '');
      } catch (err) {
        return Promise.reject(err);
      }
    }
    return whoAsks(ctx, ctx.token).then((who) => answer(ctx, id, mode, who));
  }

  function answer(ctx: RequestContext, id: string, mode: Mode, who: string): Promise<Lookup> {
    const normId = normaliseId(id);
    const key = cacheKey(inner.name, ctx.projectId, who, normId);
    // A cached key answers its aliases too; but a fetch through an alias, and a "no" to it, stay the alias's own.
    const askKey = normId === id ? key : cacheKey(inner.name, ctx.projectId, who, `as given: ${id}`);
    const t = now();
    const negative = store.denial(askKey, t);
    if (negative !== undefined) {
      counters.negativeHits += 1;
      throw negative.error;
    }
    const entry = entries.get(key);
    if (entry !== undefined && t < entry.expiresAt) {
      counters.hits += 1;
      entries.delete(key);
      entries.set(key, entry); // now the most recently used
      return Promise.resolve({ object: out(entry, mode), source: 'cache' });
    }
    if (entry !== undefined && t >= entry.expiresAt + staleMs) store.expire(entry);
    return miss(ctx, id, mode, key, askKey, normId);
  }

  async function miss(ctx: RequestContext, id: string, mode: Mode, key: string, askKey: string, normId: string): Promise<Lookup> {
    const under = flights.get(askKey);
    if (under !== undefined) {
      counters.coalesced += 1;
      return { object: await join(under, mode, key, ctx.signal), source: 'coalesced' };
    }
    counters.misses += 1;
    // Metadata alone is cheap and holds no secret: fetched, not cached.
    if (mode === 'meta') return { object: await getMetadata(ctx, id, key, askKey, normId), source: 'backend' };
    const flight: Flight = { id: normId, askKey, waiters: [], abandon: new AbortController() };
    flights.set(askKey, flight);
    const mine = join(flight, mode, key, ctx.signal);
    void fly(flight, { ...ctx, signal: flight.abandon.signal }, id, key);
    return { object: await mine, source: 'backend' };
  }

  /**
   * Whose entry: the service's own (no token), the token's principal when
   * Keystone names one in the request's project, else the token itself.
   * @throws E_BACKEND_AUTH when Keystone says the token is not valid.
   */
  async function whoAsks(ctx: RequestContext, token: string): Promise<string> {
    const principal = identify === undefined ? undefined : await identify(token, ctx.signal);
    if (principal !== undefined && principal.projectId === ctx.projectId) return `principal:${principal.key}`;
    return `token:${createHash('sha256').update(token).digest('base64url')}`;
  }

  async function withKey<T>(ctx: RequestContext, id: string, use: (key: ManagedObject, source: Lookup['source']) => T): Promise<Awaited<T>> {
    const { object, source } = await lookup(ctx, id, { lend: true });
    try {
      return await use(object, source);
    } finally {
      object.zeroize();
    }
  }

  function evict(id: string): number {
    const normId = normaliseId(id);
    for (const [key, flight] of flights) if (flight.id === normId) flights.delete(key);
    return store.evict(normId);
  }

  function flush(): number {
    flights.clear();
    return store.flush();
  }

  function sweep(): number {
    return store.sweep(now());
  }

  return {
    name: `cache(${inner.name})`,
    capabilities: inner.capabilities,
    createKey: (ctx, spec) => inner.createKey(ctx, spec),
    createKeyPair: (ctx, spec) => inner.createKeyPair(ctx, spec),
    store: (ctx, obj) => inner.store(ctx, obj),
    list: (ctx, listOptions) => inner.list(ctx, listOptions),
    health: () => inner.health(),

    get: async (ctx, id, getOptions = {}) => (await lookup(ctx, id, { metadataOnly: getOptions.metadataOnly === true })).object,
    lookup,
    withKey,

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

