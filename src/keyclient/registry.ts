import type { BackendDefinition } from './backend.js';
import { barbicanOptionsSchema } from './backends/barbican/options.js';
import { fixedBackend } from './backends/fixed.js';
import { kmipOptionsSchema } from './backends/kmip/options.js';
import { localOptionsSchema } from './backends/local/options.js';

/**
 * Config names → backends. Static on purpose: config can name a backend but
 * never a module path to load. Only the option schemas load with this module
 * (the config validates every section); a backend's code loads when it is
 * opened (loadBackend), so a daemon on the local keystore never loads
 * Barbican's HTTP client or KMIP's TTLV codec, which was a tenth of its start.
 */
export const backends = {
  local: { optionsSchema: localOptionsSchema },
  barbican: { optionsSchema: barbicanOptionsSchema },
  kmip: { optionsSchema: kmipOptionsSchema },
  fixed: { optionsSchema: fixedBackend.optionsSchema },
} as const;

export type BackendName = keyof typeof backends;
export const backendNames = Object.keys(backends) as BackendName[];

export function isBackendName(name: string): name is BackendName {
  return Object.hasOwn(backends, name);
}

/** The backend's code (its factory), imported on first use. */
export async function loadBackend(name: BackendName): Promise<BackendDefinition> {
  switch (name) {
    case 'local':
      return (await import('./backends/local/backend.js')).localBackend as BackendDefinition;
    case 'barbican':
      return (await import('./backends/barbican/backend.js')).barbicanBackend as BackendDefinition;
    case 'kmip':
      return (await import('./backends/kmip/backend.js')).kmipBackend as BackendDefinition;
    case 'fixed':
      return fixedBackend as BackendDefinition;
  }
}
