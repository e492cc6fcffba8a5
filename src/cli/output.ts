import { isPortcullisError } from '../errors.js';
import { exitCodes } from './command.js';
import { unreachableCodes } from './errors.js';

export class UsageError extends Error {
  override readonly name = 'UsageError';
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** A plain aligned table for people; scripts use --json. */
export function printTable(headers: string[], rows: string[][]): void {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ').trimEnd();
  process.stdout.write(`${[line(headers), ...rows.map(line)].join('\n')}\n`);
}

/** Label–value lines for one object (an attach answer, a volume); scripts use --json. */
export function printFields(rows: [string, string][]): void {
  const width = Math.max(0, ...rows.map(([label]) => label.length));
  process.stdout.write(`${rows.map(([label, value]) => `${label.padEnd(width)}  ${value}`.trimEnd()).join('\n')}\n`);
}

/** Prints a failure once, the way the operator asked (text or JSON), and picks the exit code. */
export function reportFailure(err: unknown, json: boolean): number {
  if (err instanceof UsageError) {
    process.stderr.write(`portcullis: ${err.message}\nTry 'portcullis --help'.\n`);
    return exitCodes.usage;
  }
  if (isPortcullisError(err)) {
    const exit = err.code.startsWith('E_CONFIG_') ? exitCodes.config : unreachableCodes.has(err.code) ? exitCodes.unreachable : exitCodes.failed;
    const retryAfter = err.details['retry_after_seconds'];
    if (json) process.stderr.write(`${JSON.stringify({ error: err.toJSON() })}\n`);
    else process.stderr.write(`portcullis: ${err.code}: ${err.message}${typeof retryAfter === 'number' ? ` (retry after ${retryAfter} s)` : ''}\n`);
    return exit;
  }
  const message = err instanceof Error ? err.message : String(err);
  if (json) process.stderr.write(`${JSON.stringify({ error: { code: 'E_INTERNAL', message, details: {} } })}\n`);
  else process.stderr.write(`portcullis: unexpected error: ${message}\n`);
  return exitCodes.failed;
}
