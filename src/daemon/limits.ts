import type { CommandRunner } from '../luks/runner.js';
import { semaphore } from '../util/semaphore.js';

/** At most `limit` privileged commands at once: 64 parallel attaches must not fork 64 cryptsetups with argon2 each. */
export function limitedRunner(runner: CommandRunner, limit: number): CommandRunner & { readonly active: number } {
  const sem = semaphore(limit);
  return {
    run: (argv, options) => sem.with(() => runner.run(argv, options)),
    get active() {
      return sem.active;
    },
  };
}

/**
 * Admission for mutating requests: a bounded queue. Past the bound a request
 * is answered 503 at once rather than waiting behind work it cannot overtake.
 */
export function admission(max: () => number) {
  let pending = 0;
  return {
    tryEnter(): boolean {
      if (pending >= max()) return false;
      pending += 1;
      return true;
    },
    leave(): void {
      pending -= 1;
    },
    get pending(): number {
      return pending;
    },
  };
}
