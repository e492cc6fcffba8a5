import type { BackendDefinition } from './backend.js';
import { barbicanBackend } from './backends/barbican/backend.js';
import { fixedBackend } from './backends/fixed.js';
import { kmipBackend } from './backends/kmip/backend.js';
import { localBackend } from './backends/local/backend.js';

/**
 * Config names → backends. Static on purpose: config can name a backend but
 * never a module path to load.
 */
export const backends = {
  local: localBackend,
  barbican: barbicanBackend,
  kmip: kmipBackend,
  fixed: fixedBackend,
} as const satisfies Record<string, BackendDefinition>;

export type BackendName = keyof typeof backends;
export const backendNames = Object.keys(backends) as BackendName[];

export function isBackendName(name: string): name is BackendName {
  return Object.hasOwn(backends, name);
}
