import { setTimeout as delay } from 'node:timers/promises';
import { z } from 'zod';
import { isTransient, KeyClientError } from './errors.js';
import type { KeyManager, SecretConsumers } from './key-manager.js';
import { seconds } from './options.js';

/** How the retrying wrapper backs off; the config's `retry:` section. */
export const retryOptionsSchema = z
  .strictObject({
    /** Tries per call, the first included; 1 turns retrying off. @default 4 */
    attempts: z.number().int().min(1).max(20).default(4),
    /** Backoff ceiling before the first retry; doubled for each further one. @default 0.2 */
    base_delay_seconds: seconds().default(0.2),
    /** No wait is longer, not even one a server asks for with Retry-After. @default 10 */
    max_delay_seconds: seconds().max(300).default(10),
    /** Full jitter: wait a random time up to the backoff, so restarted hosts do not retry in step. @default true */
    jitter: z.boolean().default(true),
  })
  .refine((o) => o.max_delay_seconds >= o.base_delay_seconds, {
    path: ['max_delay_seconds'],
    message: 'must be at least base_delay_seconds',
  });

export type RetryOptions = z.output<typeof retryOptionsSchema>;

export interface RetryDeps {
  /** Waits `ms`; should end early when `signal` aborts (close()). Injected by tests. */
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
  /** Uniform in [0, 1), for jitter. */
  random?: () => number;
}

/**
 * Whether a call may be sent again after it failed: reads can always be
 * repeated, but a create or store that reached the server may already have
 * made an object, and a blind resend would make a second one.
 */
type Resend = 'always' | 'if-not-processed';

/**
 * Wraps `inner` so that E_BACKEND_UNAVAILABLE is retried with exponential
 * backoff and full jitter, honouring the server's Retry-After. Other errors
 * pass through unchanged and at once.
 * @throws E_BACKEND_UNAVAILABLE with `details.attempts` when every attempt failed
 * or the call could not safely be resent; the last failure is its `cause`.
 */
export function retryingKeyManager(inner: KeyManager, options: RetryOptions, deps: RetryDeps = {}): KeyManager {
  const sleep = deps.sleep ?? defaultSleep;
  const random = deps.random ?? Math.random;
  const closer = new AbortController();
  let closing: Promise<void> | undefined;

  /**
   * A wait ends early on close() and at the caller's deadline, after which no
   * attempt starts. Not AbortSignal.any(): tied to the manager's long-lived
   * close signal, its signals pile up in older Nodes (nodejs/node#55351);
   * these listeners are removed when the call ends.
   */
  async function withRetry<T>(resend: Resend, call: () => Promise<T>, deadline?: AbortSignal): Promise<T> {
    if (deadline === undefined) return attempts(resend, call, closer.signal, () => false);
    const wake = new AbortController();
    const onAbort = () => wake.abort();
    closer.signal.addEventListener('abort', onAbort, { once: true });
    deadline.addEventListener('abort', onAbort, { once: true });
    if (deadline.aborted) wake.abort();
    try {
      return await attempts(resend, call, wake.signal, () => deadline.aborted);
    } finally {
      closer.signal.removeEventListener('abort', onAbort);
      deadline.removeEventListener('abort', onAbort);
    }
  }

  async function attempts<T>(resend: Resend, call: () => Promise<T>, wake: AbortSignal, past: () => boolean): Promise<T> {
    for (let attempt = 1; ; attempt += 1) {
      try {
        return await call();
      } catch (err) {
        if (!isTransient(err)) throw err;
        const failure = err as KeyClientError;
        const again = attempt < options.attempts && (resend === 'always' || notProcessed(failure)) && closing === undefined && !past();
        if (!again) throw withAttempts(failure, attempt);
        await sleep(delayMs(attempt, failure), wake);
        // Closed or past the deadline while waiting: the caller gets the failure it would have had, not a closed-manager error.
        if (closing !== undefined || past()) throw withAttempts(failure, attempt);
      }
    }
  }

  /** Full jitter (AWS Architecture Blog, "Exponential Backoff and Jitter"), or the server's Retry-After. */
  function delayMs(attempt: number, err: KeyClientError): number {
    const maxMs = options.max_delay_seconds * 1000;
    if (err.retryAfterMs !== undefined) return Math.min(err.retryAfterMs, maxMs);
    const ceiling = Math.min(maxMs, options.base_delay_seconds * 1000 * 2 ** (attempt - 1));
    return options.jitter ? random() * ceiling : ceiling;
  }

  return {
    name: `retry(${inner.name})`,
    capabilities: inner.capabilities,
    createKey: (ctx, spec) => withRetry('if-not-processed', () => inner.createKey(ctx, spec), ctx.signal),
    createKeyPair: (ctx, spec) => withRetry('if-not-processed', () => inner.createKeyPair(ctx, spec), ctx.signal),
    store: (ctx, obj) => withRetry('if-not-processed', () => inner.store(ctx, obj), ctx.signal),
    get: (ctx, id, getOptions) => withRetry('always', () => inner.get(ctx, id, getOptions), ctx.signal),
    delete: (ctx, id) => {
      let mayHaveDeleted = false;
      return withRetry('always', async () => {
        try {
          await inner.delete(ctx, id);
        } catch (err) {
          // An earlier attempt reached the server and its answer was lost: gone is what delete wanted.
          if (mayHaveDeleted && err instanceof KeyClientError && err.code === 'E_KEY_NOT_FOUND') return;
          if (isTransient(err) && !notProcessed(err as KeyClientError)) mayHaveDeleted = true;
          throw err;
        }
      }, ctx.signal);
    },
    list: (ctx, listOptions) => withRetry('always', () => inner.list(ctx, listOptions), ctx.signal),
    health: () => withRetry('always', () => inner.health()),
    // Both consumer calls are idempotent in Barbican (create-or-update; a second removal is 'absent'), so always resendable.
    ...(inner.consumers === undefined
      ? {}
      : {
          consumers: {
            register: (ctx, id, consumer) => withRetry('always', () => (inner.consumers as SecretConsumers).register(ctx, id, consumer), ctx.signal),
            remove: (ctx, id, consumer) => withRetry('always', () => (inner.consumers as SecretConsumers).remove(ctx, id, consumer), ctx.signal),
          } satisfies SecretConsumers,
        }),
    ...(inner.adoption === undefined ? {} : { adoption: inner.adoption }),
    close() {
      if (closing === undefined) {
        closer.abort();
        closing = inner.close();
      }
      return closing;
    },
  };
}

/**
 * The server cannot have acted on the request: the connection never came up,
 * or it answered 429/503, which refuse a request before processing it.
 */
function notProcessed(err: KeyClientError): boolean {
  return err.requestSent === false || err.httpStatus === 429 || err.httpStatus === 503;
}

/** The same failure, not mutated (it may be shared), with how many attempts were made. */
function withAttempts(err: KeyClientError, attempts: number): KeyClientError {
  const message = attempts > 1 ? `${err.message} (gave up after ${attempts} attempts)` : err.message;
  return new KeyClientError(err.code, message, { details: { ...err.details, attempts }, cause: err });
}

async function defaultSleep(ms: number, signal: AbortSignal): Promise<void> {
  try {
    await delay(ms, undefined, { signal });
  } catch {
    // Aborted by close(): the retry loop sees `closing` and gives up.
  }
}
