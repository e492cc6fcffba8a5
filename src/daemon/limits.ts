import type { CommandRunner, RunResult } from '../luks/commands/runner.js';
import { semaphore } from '../util/semaphore.js';

export interface LimitedRunner extends CommandRunner {
  readonly limit: number;
  /** Commands running now, stuck ones included. */
  readonly active: number;
  /** Commands that outlived their timeout by the grace period: killed, but not gone (D state). Their slots stay taken. */
  readonly stuck: number;
}

/**
 * At most `limit` privileged commands at once: 64 parallel attaches must not
 * fork 64 cryptsetups with argon2 each. A command still there `graceMs` after
 * its timeout (SIGKILL waits while a process sleeps uninterruptibly, e.g. on
 * I/O to a suspended device) is answered as timed out, so its request ends
 * and its locks are freed, while its slot stays taken, and counted as stuck,
 * until it really exits: never silently lost, never handed out twice.
 */
export function limitedRunner(runner: CommandRunner, limit: number, options: { graceMs?: number } = {}): LimitedRunner {
  const sem = semaphore(limit);
  const graceMs = options.graceMs ?? 5000;
  let stuck = 0;
  return {
    run: (argv, runOptions) =>
      new Promise<RunResult>((resolve, reject) => {
        void sem.with(async () => {
          let answered = false;
          const timer =
            runOptions?.timeoutMs === undefined
              ? undefined
              : setTimeout(() => {
                  answered = true;
                  stuck += 1;
                  const said = `${argv[0] ?? 'the command'} did not exit ${graceMs} ms after it was killed at its timeout: it is stuck in the kernel (uninterruptible I/O on the device?)`;
                  resolve({ code: null, signal: 'SIGKILL', timedOut: true, stuck: true, stdout: Buffer.alloc(0), stderr: Buffer.from(said) });
                }, runOptions.timeoutMs + graceMs);
          try {
            const result = await runner.run(argv, runOptions);
            if (!answered) resolve(result);
          } catch (err) {
            if (!answered) reject(err);
          } finally {
            clearTimeout(timer);
            if (answered) stuck -= 1;
          }
        });
      }),
    limit,
    get active() {
      return sem.active;
    },
    get stuck() {
      return stuck;
    },
  };
}

/** A bounded queue of admitted requests (running or waiting for a command slot). */
export interface Admission {
  /** Takes a place, or false when all `max()` are taken. */
  tryEnter(): boolean;
  /** Gives a place back: only once the admitted work has really ended. */
  leave(): void;
  readonly pending: number;
}

/**
 * Admission for requests that do real work: a bounded queue. Past the bound a
 * request is answered 503 at once rather than waiting behind work it cannot
 * overtake. Mutating requests and bounded reads each have their own.
 */
export function admission(max: () => number): Admission {
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
