/**
 * The key cache's backend fetches in flight: one per key however many
 * callers ask (single-flight), each caller settled with its own copy or lent
 * view the moment the fetch lands, and left behind at its own deadline.
 */
import type { EntryStore, Counter, Entry } from './cache-entries.js';
import { isTransient, keyError } from './errors.js';
import type { GetOptions, RequestContext } from './key-manager.js';
import type { ManagedObject } from './objects/index.js';

/** What a caller gets from an entry: metadata alone, a copy it owns, or a lent view. */
export type Mode = 'meta' | 'copy' | 'lend';

interface Waiter {
  readonly mode: Mode;
  resolve(obj: ManagedObject): void;
  reject(err: unknown): void;
}

/** One backend fetch and everyone waiting for it. */
export interface Flight {
  readonly id: string;
  /** Flights and remembered denials are per id as the caller gave it; see lookup(). */
  readonly askKey: string;
  readonly waiters: Waiter[];
  /**
   * The fetch's own deadline, apart from any caller's: it aborts only when
   * every waiter has left at its deadline, so one caller's deadline never
   * fails another's fetch, and a fetch nobody waits for is not left running.
   */
  readonly abandon: AbortController;
}

export interface FlightDeps {
  store: EntryStore;
  counters: Record<Counter, number>;
  now(): number;
  ttlMs: number;
  out(entry: Entry, mode: Mode): ManagedObject;
  fetch(ctx: RequestContext, id: string, options: GetOptions): Promise<ManagedObject>;
}

export function flightDesk({ store, counters, now, ttlMs, out, fetch }: FlightDeps) {
  const flights = new Map<string, Flight>();

  /**
   * Runs the flight's backend fetch and settles every waiter synchronously,
   * each with its own copy or view, so no eviction can slip in between the
   * fetch and a waiter's answer.
   */
  async function fly(flight: Flight, ctx: RequestContext, id: string, key: string): Promise<void> {
    let entry: Entry;
    try {
      entry = store.adopt(key, flight.id, await fetch(ctx, id, {}), now() + ttlMs);
    } catch (err) {
      land(flight, key, err);
      return;
    }
    // An evict(), delete() or flush() during the fetch detached the flight: answer its callers, keep nothing.
    const current = flights.get(flight.askKey) === flight;
    if (current) {
      flights.delete(flight.askKey);
      store.insert(entry);
    }
    // A fetch that every waiter abandoned (leave()) may still land: it is no longer current, so nobody gets a copy and nothing is kept.
    for (const waiter of flight.waiters) settle(waiter, () => out(entry, waiter.mode));
    if (!current) store.discard(entry);
  }

  function land(flight: Flight, key: string, err: unknown): void {
    const current = flights.get(flight.askKey) === flight;
    if (current) flights.delete(flight.askKey);
    const t = now();
    const stale = current ? store.staleFor(key, isTransient(err), t) : undefined;
    if (stale !== undefined) {
      counters.staleServed += flight.waiters.length;
      for (const waiter of flight.waiters) settle(waiter, () => out(stale, waiter.mode));
      return;
    }
    if (current) store.refused(key, flight.askKey, flight.id, err, t);
    for (const waiter of flight.waiters) waiter.reject(err);
  }

  /** Waits for `flight`; at `deadline`, leaves it (stale if allowed, else E_BACKEND_UNAVAILABLE). */
  function join(flight: Flight, mode: Mode, key: string, deadline: AbortSignal | undefined): Promise<ManagedObject> {
    return new Promise((resolve, reject) => {
      const onDeadline = () => leave(flight, waiter, key);
      const done = () => deadline?.removeEventListener('abort', onDeadline);
      const waiter: Waiter = {
        mode,
        resolve: (obj) => {
          done();
          resolve(obj);
        },
        reject: (err) => {
          done();
          reject(err);
        },
      };
      flight.waiters.push(waiter);
      if (deadline?.aborted === true) onDeadline();
      else deadline?.addEventListener('abort', onDeadline, { once: true });
    });
  }

  /** A waiter's deadline passed: it gets a stale key or the failure now; the last one to leave stops the fetch. */
  function leave(flight: Flight, waiter: Waiter, key: string): void {
    const at = flight.waiters.indexOf(waiter);
    if (at < 0) return;
    flight.waiters.splice(at, 1);
    const err = keyError('E_BACKEND_UNAVAILABLE', "The key manager had not answered when the caller's deadline passed; the request was abandoned", {
      details: { deadline: true },
    });
    const stale = store.staleFor(key, isTransient(err), now());
    if (stale !== undefined) {
      counters.staleServed += 1;
      settle(waiter, () => out(stale, waiter.mode));
    } else {
      waiter.reject(err);
    }
    if (flight.waiters.length > 0) return;
    if (flights.get(flight.askKey) === flight) flights.delete(flight.askKey);
    flight.abandon.abort();
  }

  return {
    flights,
    /** Starts the fetch of `id` for `askKey`; resolves the first caller's answer. */
    start(ctx: RequestContext, id: string, normId: string, askKey: string, key: string, mode: Mode): Promise<ManagedObject> {
      const flight: Flight = { id: normId, askKey, waiters: [], abandon: new AbortController() };
      flights.set(askKey, flight);
      const mine = join(flight, mode, key, ctx.signal);
      void fly(flight, { ...ctx, signal: flight.abandon.signal }, id, key);
      return mine;
    },
    join,
  };
}

function settle(waiter: Waiter, make: () => ManagedObject): void {
  try {
    waiter.resolve(make());
  } catch (err) {
    waiter.reject(err); // e.g. the allocator ran out of locked memory for this caller's copy
  }
}

