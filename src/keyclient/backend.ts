import type { z } from 'zod';
import type { KeyManager } from './key-manager.js';
import type { SecureAllocator } from '../util/secure-memory.js';

/** What every backend gets from whoever builds it (daemon, CLI, tests). */
export interface BackendDeps {
  allocator: SecureAllocator;
  /** Milliseconds since the epoch; injected so tests can move time. */
  now?: () => number;
  /** Told about non-fatal trouble (a state file it cannot read or write); the daemon logs it. Library code never logs. */
  warn?: (message: string) => void;
}

/**
 * One backend: its option schema (with defaults, validated at the config
 * edge) and a factory. Adding a backend is one file exporting this, plus one
 * line in registry.ts.
 */
export interface BackendDefinition<S extends z.ZodType = z.ZodType> {
  readonly name: string;
  /** One line for --help and docs. */
  readonly description: string;
  readonly optionsSchema: S;
  create(options: z.output<S>, deps: BackendDeps): Promise<KeyManager>;
}

export function defineBackend<S extends z.ZodType>(def: BackendDefinition<S>): BackendDefinition<S> {
  return def;
}
