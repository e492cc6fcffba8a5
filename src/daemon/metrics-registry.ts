import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { CacheStats } from '../keyclient/cache-options.js';

/** Latency buckets in seconds: cache hits take microseconds, an attach under emulation many seconds. */
const buckets = [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

export type PromMetrics = ReturnType<typeof promMetrics>;

/**
 * The daemon's Prometheus metrics in prom-client (GET /metrics), loaded by
 * metrics.ts after start. Cache figures are read from the cache at scrape time.
 */
export function promMetrics(cacheStats: () => CacheStats | undefined, commandStats: () => { active: number; stuck: number }) {
  const registry = new Registry();
  const operations = new Counter({
    name: 'portcullis_operations_total',
    help: 'Attach, detach and resize requests by outcome (ok or the error code).',
    labelNames: ['operation', 'outcome'] as const,
    registers: [registry],
  });
  const latency = new Histogram({
    name: 'portcullis_operation_seconds',
    help: 'Attach, detach and resize latency by outcome.',
    labelNames: ['operation', 'outcome'] as const,
    buckets,
    registers: [registry],
  });
  const keyFetch = new Histogram({
    name: 'portcullis_key_fetch_seconds',
    help: 'Time to get a key, by where it came from (cache, backend, created).',
    labelNames: ['source'] as const,
    buckets,
    registers: [registry],
  });
  const inFlight = new Gauge({ name: 'portcullis_requests_in_flight', help: 'Mutating requests admitted whose work has not ended (overrun ones included).', registers: [registry] });
  const overrun = new Gauge({
    name: 'portcullis_requests_overrun',
    help: 'Requests answered 504 E_REQUEST_TIMEOUT whose work still runs; each keeps its admission slot (and a mutating one the shutdown drain) until it ends.',
    registers: [registry],
  });
  const connections = new Gauge({ name: 'portcullis_connections_open', help: 'Connections to the API socket open now, idle and slow ones included (limits.max_connections).', registers: [registry] });
  const rejected = new Counter({ name: 'portcullis_requests_rejected_total', help: 'Requests refused before any work, by reason.', labelNames: ['reason'] as const, registers: [registry] });
  const cacheCounter = (name: string, help: string, field: keyof Omit<CacheStats, 'backendLatency'>) =>
    new Gauge({
      name,
      help,
      registers: [registry],
      collect() {
        const stats = cacheStats();
        if (stats !== undefined) this.set(stats[field]);
      },
    });
  cacheCounter('portcullis_cache_hits', 'Key cache hits since start.', 'hits');
  cacheCounter('portcullis_cache_misses', 'Key cache misses (backend fetches started) since start.', 'misses');
  cacheCounter('portcullis_cache_coalesced', 'Gets that joined a fetch already under way.', 'coalesced');
  cacheCounter('portcullis_cache_stale_served', 'Expired keys served while the backend was unavailable.', 'staleServed');
  cacheCounter('portcullis_cache_negative_hits', 'Gets answered from a remembered not-found/forbidden.', 'negativeHits');
  cacheCounter('portcullis_cache_entries', 'Keys held in the cache now.', 'entries');
  cacheCounter('portcullis_cache_evictions', 'Entries dropped to make room (LRU).', 'evictions');
  new Gauge({
    name: 'portcullis_commands_active',
    help: 'Privileged commands (cryptsetup, blkid, dmsetup) running now, stuck ones included.',
    registers: [registry],
    collect() {
      this.set(commandStats().active);
    },
  });
  new Gauge({
    name: 'portcullis_commands_stuck',
    help: 'Commands killed at their timeout that have not exited (uninterruptible I/O); each holds a command slot.',
    registers: [registry],
    collect() {
      this.set(commandStats().stuck);
    },
  });
  new Gauge({
    name: 'portcullis_backend_fetch_seconds_sum',
    help: 'Total time spent fetching keys from the backend (the cache times every fetch).',
    registers: [registry],
    collect() {
      const stats = cacheStats();
      if (stats !== undefined) this.set(stats.backendLatency.sum / 1000);
    },
  });

  const consumers = new Counter({
    name: 'portcullis_key_consumer_requests_total',
    help: 'Secret consumer registrations and removals sent to the key manager, by outcome (registered, removed, absent, unsupported, or an error code).',
    labelNames: ['op', 'outcome'] as const,
    registers: [registry],
  });

  return {
    registry,
    consumer(op: 'register' | 'remove', outcome: string): void {
      consumers.inc({ op, outcome });
    },
    /** Records one finished operation. */
    observe(operation: 'attach' | 'detach' | 'resize' | 'rekey' | 'ephemeral_attach' | 'ephemeral_detach', outcome: string, seconds: number): void {
      operations.inc({ operation, outcome });
      latency.observe({ operation, outcome }, seconds);
    },
    keyFetched(source: string, seconds: number): void {
      keyFetch.observe({ source }, seconds);
    },
    inFlight,
    overrun,
    connections,
    rejected(reason: string): void {
      rejected.inc({ reason });
    },
    text: () => registry.metrics(),
  };
}
