/**
 * Keyed async mutexes: one holder per key (a device path, a mapping name) at
 * a time, others queue in order. No timers, no polling.
 */
export interface KeyedLock {
  /** Runs fn while holding every key in `keys` (taken in sorted order, so two callers can't deadlock). */
  with<T>(keys: readonly string[], fn: () => Promise<T>): Promise<T>;
  /** Keys currently held or waited for; for tests and stats. */
  size(): number;
  /** Whether `key` is held or waited for now. */
  held(key: string): boolean;
}

export function keyedLock(): KeyedLock {
  const tails = new Map<string, Promise<void>>();

  async function acquire(key: string): Promise<() => void> {
    const previous = tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((resolve) => {
      release = resolve;
    });
    const tail = previous.then(() => mine);
    tails.set(key, tail);
    await previous;
    return () => {
      release();
      // Drop the entry once nobody queued behind us, so the map does not grow without bound.
      if (tails.get(key) === tail) tails.delete(key);
    };
  }

  return {
    async with(keys, fn) {
      const releases: Array<() => void> = [];
      try {
        for (const key of [...new Set(keys)].sort()) releases.push(await acquire(key));
        return await fn();
      } finally {
        for (const release of releases.reverse()) release();
      }
    },
    size: () => tails.size,
    held: (key) => tails.has(key),
  };
}
