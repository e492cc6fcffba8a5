/**
 * The key cache's options (the `cache` section of the config), its figures
 * (GET /v1/cache, metrics) and the latency histogram behind them.
 */
import { z } from 'zod';
import { seconds } from './options.js';
import type { TokenIdentity } from './token-identity.js';
import type { SecureAllocator } from '../util/secure-memory.js';

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

export function histogram(bounds: readonly number[]): { observe(ms: number): void; snapshot(): LatencyHistogram } {
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
