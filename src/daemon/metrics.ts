import type { CacheStats } from '../keyclient/cache-options.js';
import type { PromMetrics } from './metrics-registry.js';

export type Metrics = ReturnType<typeof createMetrics>;

type Operation = 'attach' | 'detach' | 'resize' | 'rekey' | 'ephemeral_attach' | 'ephemeral_detach';

/** Prometheus' text exposition format, what prom-client's Registry.contentType says. */
const CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

/**
 * The daemon's metrics (GET /metrics). prom-client and its dependencies take
 * about 30 ms to import, a fifth of the daemon's start, and nothing needs
 * them before the first request: the daemon calls load() once it has said
 * READY=1. Until then (or until the first use, which also loads it) what
 * happens is kept in order and replayed into the registry, so no count is lost.
 */
export function createMetrics(cacheStats: () => CacheStats | undefined, commandStats: () => { active: number; stuck: number } = () => ({ active: 0, stuck: 0 })) {
  let loaded: PromMetrics | undefined;
  let loading: Promise<PromMetrics> | undefined;
  const early: Array<(m: PromMetrics) => void> = [];

  function load(): Promise<PromMetrics> {
    loading ??= import('./metrics-registry.js').then(({ promMetrics }) => {
      const metrics = promMetrics(cacheStats, commandStats);
      for (const record of early.splice(0)) record(metrics);
      loaded = metrics;
      return metrics;
    });
    return loading;
  }

  function record(update: (m: PromMetrics) => void): void {
    if (loaded !== undefined) {
      update(loaded);
      return;
    }
    early.push(update);
    load().catch(() => undefined); // a failed import is GET /metrics' to report, not an unhandled rejection here
  }

  const gauge = (pick: (m: PromMetrics) => PromMetrics['inFlight']) => ({
    inc: () => record((m) => pick(m).inc()),
    dec: () => record((m) => pick(m).dec()),
    set: (value: number) => record((m) => pick(m).set(value)),
  });

  return {
    /** Imports prom-client and builds the registry; idempotent. */
    load: async (): Promise<void> => void (await load()),
    /** Counts one secret-consumer request (Barbican consumers). */
    consumer(op: 'register' | 'remove', outcome: string): void {
      record((m) => m.consumer(op, outcome));
    },
    /** Records one finished operation. */
    observe(operation: Operation, outcome: string, seconds: number): void {
      record((m) => m.observe(operation, outcome, seconds));
    },
    keyFetched(source: string, seconds: number): void {
      record((m) => m.keyFetched(source, seconds));
    },
    inFlight: gauge((m) => m.inFlight),
    overrun: gauge((m) => m.overrun),
    connections: gauge((m) => m.connections),
    rejected(reason: string): void {
      record((m) => m.rejected(reason));
    },
    text: async (): Promise<string> => (await load()).text(),
    contentType: CONTENT_TYPE,
  };
}
