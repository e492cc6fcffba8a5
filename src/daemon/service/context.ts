import { performance } from 'node:perf_hooks';
import type { CachingKeyManager, Lookup } from '../../keyclient/cache.js';
import type { RequestContext } from '../../keyclient/key-manager.js';
import type { ManagedObject } from '../../keyclient/objects/index.js';
import type { LuksDriver } from '../../luks/driver.js';
import { daemonError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { LuksOptions } from '../../config/daemon-options.js';
import type { KeySource } from '../../api/wire.js';
import type { Peer } from '../api/peer.js';
import type { VolumeRegistry } from '../volume-registry.js';

/** What the services need; the daemon builds it once and swaps `keys`/`luks` on reload. */
export interface ServiceDeps {
  keys(): CachingKeyManager;
  /** The configured backend's registry name ("local", "barbican"). */
  backend(): string;
  luks(): LuksOptions;
  driver: LuksDriver;
  log: Logger;
  metrics: Metrics;
  /** What the daemon knows of mappings beyond the kernel's view. */
  registry: VolumeRegistry;
}

/** `signal`: the API request's deadline, so no key-manager request outlives the answer the caller already had. */
export function keyContext(projectId: string, token: string | undefined, signal?: AbortSignal): RequestContext {
  const ctx: RequestContext = token === undefined ? { projectId } : { projectId, token };
  if (signal !== undefined) ctx.signal = signal;
  return ctx;
}

export function checkBackend(deps: ServiceDeps, requested: string | undefined): void {
  if (requested !== undefined && requested !== deps.backend()) {
    throw daemonError('E_KEY_BACKEND_MISMATCH', `The key names backend "${requested}" but this daemon uses "${deps.backend()}"; refusing`, {
      details: { requested, configured: deps.backend() },
    });
  }
}

/**
 * Gets a key through the cache and audits the access (project, key id,
 * source, outcome — never bytes). The object is the cache's own bytes, lent
 * (no copy in locked memory per request); the caller must zeroize it, which
 * gives them back: both callers do so in a finally.
 */
export async function fetchKey(deps: ServiceDeps, ctx: RequestContext, keyId: string, peer: Peer, purpose: string): Promise<{ object: ManagedObject; source: KeySource }> {
  const started = performance.now();
  let lookup: Lookup;
  try {
    lookup = await deps.keys().lookup(ctx, keyId, { lend: true });
  } catch (err) {
    deps.log.audit('key_access', { op: 'get', purpose, project_id: ctx.projectId, key_id: keyId, outcome: codeOf(err), peer_uid: peer.uid, peer_pid: peer.pid });
    throw err;
  }
  const source: KeySource = lookup.source;
  deps.metrics.keyFetched(source, (performance.now() - started) / 1000);
  deps.log.audit('key_access', { op: 'get', purpose, project_id: ctx.projectId, key_id: keyId, source, outcome: 'ok', peer_uid: peer.uid, peer_pid: peer.pid });
  return { object: lookup.object, source };
}

export function codeOf(err: unknown): string {
  return typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string' ? err.code : 'E_INTERNAL';
}

export function elapsed(since: number): number {
  return Math.round(performance.now() - since);
}

/** The one log line and metric of every attach, detach, resize, rekey and erase. */
export function reportOutcome(deps: ServiceDeps, operation: 'attach' | 'detach' | 'resize' | 'rekey', name: string, outcome: string, started: number, fields: Record<string, unknown>): void {
  const ms = performance.now() - started;
  deps.metrics.observe(operation, outcome, ms / 1000);
  const line = { name, outcome, ms: Math.round(ms), ...(fields as Record<string, string | number | boolean | null>) };
  if (outcome === 'ok') deps.log.info(operation, line);
  else deps.log.warn(operation, line);
}
