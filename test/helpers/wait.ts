/**
 * Bounded waits for asynchronous output (logs, journals, notify messages).
 * A line written by another process reaches the reader some time after the
 * event that caused it: read once and the test races the pipe. These poll
 * until the expected text appears, and fail with what was seen.
 */
import { setTimeout as sleep } from 'node:timers/promises';

export interface WaitOptions {
  /** @default 30_000 */
  timeoutMs?: number;
  /** @default 100 */
  intervalMs?: number;
}

/** How much of what was seen a failure shows (the tail, where the news is). */
const SHOWN = 4000;

function tail(text: string): string {
  return text.length > SHOWN ? `…${text.slice(-SHOWN)}` : text;
}

/**
 * Polls `read()` until `pattern` matches its text; returns the match.
 * @throws an Error naming `what`, the pattern and the tail of the last text read.
 */
export async function waitForMatch(what: string, read: () => string | Promise<string>, pattern: RegExp, options: WaitOptions = {}): Promise<RegExpMatchArray> {
  const timeoutMs = options.timeoutMs ?? 30_000;
  const deadline = Date.now() + timeoutMs;
  let seen = '';
  for (;;) {
    seen = await read();
    const match = pattern.exec(seen);
    if (match !== null) return match;
    if (Date.now() >= deadline) break;
    await sleep(options.intervalMs ?? 100);
  }
  throw new Error(`${what}: ${String(pattern)} did not appear within ${timeoutMs} ms; last seen:\n${tail(seen)}`);
}

/**
 * Polls `condition()` until it holds.
 * @throws an Error naming `what` and, when given, what `describe()` says of the state.
 */
export async function waitUntil(what: string, condition: () => boolean | Promise<boolean>, options: WaitOptions & { describe?: () => string } = {}): Promise<void> {
  const timeoutMs = options.timeoutMs ?? 30_000;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await condition()) return;
    if (Date.now() >= deadline) break;
    await sleep(options.intervalMs ?? 100);
  }
  throw new Error(`${what}: not within ${timeoutMs} ms${options.describe === undefined ? '' : `; last seen:\n${tail(options.describe())}`}`);
}
