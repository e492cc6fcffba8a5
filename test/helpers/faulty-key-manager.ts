import type { KeyManager } from '../../src/keyclient/key-manager.js';
import { keyError, type KeyClientError } from '../../src/keyclient/errors.js';

/**
 * A FAKE, for the wrapper tests only: passes every call to a real KeyManager
 * unless told to fail it. The cache's stale-if-error and the retry backoff
 * must see a backend fail on cue, on a given attempt, under an injected clock;
 * a real server cannot be made to do that (killing one is slow and lands at
 * a real time), so this stands in front of the real fixed backend instead.
 */
export type Operation = 'createKey' | 'createKeyPair' | 'store' | 'get' | 'delete' | 'list' | 'health';

export interface FaultyKeyManager extends KeyManager {
  /** Calls of each operation that reached this wrapper, failed or not. */
  readonly calls: Record<Operation, number>;
  /** The next `times` calls of `op` fail with `make()` instead of reaching the real manager. */
  failNext(op: Operation, make: () => Error, times?: number): void;
  /** Every call of `op` fails with `make()` until heal(). */
  failAlways(op: Operation, make: () => Error): void;
  /** Forgets all faults. */
  heal(): void;
}

export function faultyKeyManager(inner: KeyManager): FaultyKeyManager {
  const calls: Record<Operation, number> = { createKey: 0, createKeyPair: 0, store: 0, get: 0, delete: 0, list: 0, health: 0 };
  const queued = new Map<Operation, Array<() => Error>>();
  const always = new Map<Operation, () => Error>();

  async function call<T>(op: Operation, pass: () => Promise<T>): Promise<T> {
    calls[op] += 1;
    const next = queued.get(op)?.shift() ?? always.get(op);
    if (next !== undefined) throw next();
    return pass();
  }

  return {
    name: inner.name,
    capabilities: inner.capabilities,
    calls,
    createKey: (ctx, spec) => call('createKey', () => inner.createKey(ctx, spec)),
    createKeyPair: (ctx, spec) => call('createKeyPair', () => inner.createKeyPair(ctx, spec)),
    store: (ctx, obj) => call('store', () => inner.store(ctx, obj)),
    get: (ctx, id, options) => call('get', () => inner.get(ctx, id, options)),
    delete: (ctx, id) => call('delete', () => inner.delete(ctx, id)),
    list: (ctx, options) => call('list', () => inner.list(ctx, options)),
    health: () => call('health', () => inner.health()),
    close: () => inner.close(),
    failNext(op, make, times = 1) {
      const list = queued.get(op) ?? [];
      for (let i = 0; i < times; i += 1) list.push(make);
      queued.set(op, list);
    },
    failAlways(op, make) {
      always.set(op, make);
    },
    heal() {
      queued.clear();
      always.clear();
    },
  };
}

/** What the HTTP layer throws when Barbican is down or refusing: E_BACKEND_UNAVAILABLE with its details. */
export function unavailable(details: Record<string, unknown> = { requestSent: false }): KeyClientError {
  return keyError('E_BACKEND_UNAVAILABLE', 'Injected fault: the key manager is unavailable', { details });
}

export function forbidden(): KeyClientError {
  return keyError('E_KEY_FORBIDDEN', 'Injected fault: the key manager refused this caller (403)');
}

export function notFound(): KeyClientError {
  return keyError('E_KEY_NOT_FOUND', 'Injected fault: the key manager has no such object (404)');
}
