import type { z } from 'zod';
import type { BackendDeps } from './backend.js';
import { cachingKeyManager, type CacheOptions, type CachingKeyManager } from './cache.js';
import type { KeyManager } from './key-manager.js';
import { backends, loadBackend, type BackendName } from './registry.js';
import { retryingKeyManager, type RetryOptions } from './retry.js';

/** The key-manager part of a validated config. */
export interface KeyClientConfig {
  key_manager: { backend: BackendName } & { [K in BackendName]?: z.output<(typeof backends)[K]['optionsSchema']> };
  cache: CacheOptions;
  retry: RetryOptions;
}

/**
 * Opens one backend wrapped for production use: retries for transient
 * failures, outermost. Which backend defaults to the configured one; `key
 * migrate` opens two.
 */
export async function openKeyManager(config: KeyClientConfig, deps: BackendDeps, name: BackendName = config.key_manager.backend): Promise<KeyManager> {
  // The config loader fills the selected backend's section; another backend's may be absent, so validate defaults here.
  const options = config.key_manager[name] ?? backends[name].optionsSchema.parse({});
  const definition = await loadBackend(name);
  const backend = await definition.create(options, deps);
  return retryingKeyManager(backend, config.retry);
}

/** The daemon's stack: cache(retry(backend)). */
export async function openCachedKeyManager(config: KeyClientConfig, deps: BackendDeps): Promise<CachingKeyManager> {
  const inner = await openKeyManager(config, deps);
  return cachingKeyManager(inner, config.cache, deps);
}
