/** A counting semaphore; waiters are served in arrival order. */
export function semaphore(limit: number) {
  let active = 0;
  const waiting: Array<() => void> = [];
  return {
    async with<T>(fn: () => Promise<T>): Promise<T> {
      if (active >= limit) await new Promise<void>((resolve) => waiting.push(resolve));
      else active += 1;
      try {
        return await fn();
      } finally {
        const next = waiting.shift();
        if (next) next();
        else active -= 1;
      }
    },
    get active(): number {
      return active;
    },
    get waiting(): number {
      return waiting.length;
    },
  };
}
