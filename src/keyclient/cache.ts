/**
 * The key cache (docs/configuration.md, `cache`): a KeyManager in front of
 * another. Only get() is cached; everything else passes through. Its entries
 * live in cache-entries.ts, its options and figures in cache-options.ts.
 */
import { createHash } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { cacheKey, entryStore, normaliseId, type Counter, type Entry } from './cache-entries.js';
import { histogram, latencyBucketsMs, type CacheDeps, type CacheOptions, type CacheStats } from './cache-options.js';
import { flightDesk, type Mode } from './cache-flights.js';
import { isTransient, keyError } from './errors.js';
import type { GetOptions, KeyAdoption, KeyManager, RequestContext } from './key-manager.js';
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

  const desk = flightDesk({ store, counters, now, ttlMs, out, fetch: fetchFromBackend });
  const { flights } = desk;

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
      store.refused(key, askKey, normId, err, t);
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
      store.touch(entry);
      return Promise.resolve({ object: out(entry, mode), source: 'cache' });
    }
    if (entry !== undefined && t >= entry.expiresAt + staleMs) store.expire(entry);
    return miss(ctx, id, mode, key, askKey, normId);
  }

  async function miss(ctx: RequestContext, id: string, mode: Mode, key: string, askKey: string, normId: string): Promise<Lookup> {
    const under = flights.get(askKey);
    if (under !== undefined) {
      counters.coalesced += 1;
      return { object: await desk.join(under, mode, key, ctx.signal), source: 'coalesced' };
    }
    counters.misses += 1;
    // Metadata alone is cheap and holds no secret: fetched, not cached.
    if (mode === 'meta') return { object: await getMetadata(ctx, id, key, askKey, normId), source: 'backend' };
    const mine = desk.start(ctx, id, normId, askKey, key, mode);
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
    ...(inner.consumers === undefined ? {} : { consumers: inner.consumers }),
    // An adopted object was "not found" for its new project a moment ago: that remembered denial goes.
    ...(inner.adoption === undefined ? {} : { adoption: { adopt: async (ctx: RequestContext, id: string) => withEvictDone(evict, id, (inner.adoption as KeyAdoption).adopt(ctx, id)) } }),

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

async function withEvictDone<T>(evict: (id: string) => number, id: string, work: Promise<T>): Promise<T> {
  try {
    return await work;
  } finally {
    evict(id);
  }
}
