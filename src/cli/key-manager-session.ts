import { configPath, loadConfigFile } from '../config/load.js';
import type { Config } from '../config/schema.js';
import type { KeyManager, RequestContext } from '../keyclient/key-manager.js';
import { openKeyManager } from '../keyclient/open.js';
import { isBackendName, type BackendName, backendNames } from '../keyclient/registry.js';
import { plainAllocator } from '../util/secure-memory.js';
import { stringOption, type OptionValues } from './command.js';
import { UsageError } from './output.js';

/**
 * Loads config from --config/$PORTCULLIS_CONFIG (with --backend applied) and
 * runs `fn` with an open key manager, closing it whatever happens.
 */
export async function withKeyManager<T>(
  values: OptionValues,
  fn: (km: KeyManager, open: (name: BackendName) => Promise<KeyManager>, config: Config) => Promise<T>,
): Promise<T> {
  const backend = stringOption(values, 'backend');
  if (backend !== undefined && !isBackendName(backend)) {
    throw new UsageError(`unknown backend "${backend}" (choose from ${backendNames.join(', ')})`);
  }
  const loaded = loadConfigFile(configPath(stringOption(values, 'config')), backend === undefined ? {} : { backend });
  for (const warning of loaded.warnings) process.stderr.write(`portcullis: warning: ${warning}\n`);
  const deps = { allocator: plainAllocator() };
  const opened: KeyManager[] = [];
  const open = async (name: BackendName) => {
    const km = await openKeyManager(loaded.config, deps, name);
    opened.push(km);
    return km;
  };
  try {
    return await fn(await open(loaded.config.key_manager.backend), open, loaded.config);
  } finally {
    await Promise.allSettled(opened.map((km) => km.close()));
  }
}

export function requestContext(values: OptionValues): RequestContext {
  const projectId = stringOption(values, 'project') ?? process.env['PORTCULLIS_PROJECT'];
  if (projectId === undefined || projectId === '') throw new UsageError('--project P is required (or set PORTCULLIS_PROJECT)');
  return contextFor(projectId);
}

/** A project's request context, with the Keystone token from $OS_AUTH_TOKEN when one is set. */
export function contextFor(projectId: string): RequestContext {
  // The token comes from the environment only: argv is world-readable in /proc.
  const token = process.env['OS_AUTH_TOKEN'];
  return token === undefined || token === '' ? { projectId } : { projectId, token };
}
