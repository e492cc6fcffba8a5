import { chmodSync, closeSync, openSync, writeSync } from 'node:fs';
import type { LogOptions } from '../config/daemon-options.js';

/**
 * The daemon's logs. Library layers never log; the daemon logs once per
 * outcome. Secrets are redacted by construction: every entry passes a filter
 * that drops byte arrays and any field whose name says secret, whatever the
 * caller handed in, so a careless field can never carry a key out.
 *
 * Lines are what winston wrote before (JSON with sorted keys and an ISO
 * timestamp, or "HH:mm:ss.SSS level message k=v" on a terminal), made here
 * directly: winston's format pipeline (a redaction pass per field, a
 * timestamp formatter, safe-stable-stringify, an object-mode stream per
 * transport) cost a fifth of the daemon's CPU on the cached key path, two
 * lines per request (bench/key-cache.ts), and 35 ms of every start.
 * Every line is still written, synchronously, before the call returns.
 */
export type LogFields = Record<string, string | number | boolean | null | undefined | string[] | Record<string, number>>;

export interface Logger {
  error(event: string, fields?: LogFields): void;
  warn(event: string, fields?: LogFields): void;
  info(event: string, fields?: LogFields): void;
  debug(event: string, fields?: LogFields): void;
  /** One line per key access, to the audit stream. */
  audit(event: string, fields: LogFields): void;
  setLevel(level: LogOptions['level']): void;
  close(): Promise<void>;
}

const SECRET_FIELD = /(passphrase|password|secret|token|payload|credential|^key$|_key$|key_bytes|kek)/i;

function secretField(k: string, v: unknown): boolean {
  // A number or boolean cannot carry key material; redacting one hid timings_ms.key, the key fetch's time, from every attach line.
  return typeof v !== 'number' && typeof v !== 'boolean' && k !== 'key_id' && k !== 'new_key_id' && k !== 'key_source' && k !== 'key_scope' && SECRET_FIELD.test(k);
}

export function redact(value: unknown, depth = 0): unknown {
  if (value instanceof Uint8Array) return '[redacted bytes]';
  if (depth > 4 || value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.map((v) => redact(v, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) out[k] = secretField(k, v) ? '[redacted]' : redact(v, depth + 1);
  return out;
}

/** JSON with object keys sorted at every depth (as safe-stable-stringify wrote them), so lines read and diff alike. */
function sortedJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  if (Array.isArray(value)) return `[${value.map((v) => (v === undefined ? 'null' : sortedJson(v))).join(',')}]`;
  if (value instanceof Date) return JSON.stringify(value);
  const parts: string[] = [];
  for (const k of Object.keys(value).sort()) {
    const v = (value as Record<string, unknown>)[k];
    if (v !== undefined && typeof v !== 'function') parts.push(`${JSON.stringify(k)}:${sortedJson(v)}`);
  }
  return `{${parts.join(',')}}`;
}

const LEVELS = { error: 0, warn: 1, info: 2, debug: 5 } as const;
type Level = keyof typeof LEVELS;

function jsonLine(level: string, event: string, fields: Record<string, unknown>): string {
  const entry: Record<string, unknown> = {};
  for (const k of Object.keys(fields)) entry[k] = secretField(k, fields[k]) ? '[redacted]' : redact(fields[k], 1);
  entry['level'] = level;
  entry['message'] = event;
  entry['timestamp'] = new Date().toISOString();
  return `${sortedJson(entry)}\n`;
}

function textLine(level: string, event: string, fields: Record<string, unknown>): string {
  const d = new Date();
  const two = (n: number) => String(n).padStart(2, '0');
  const time = `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}.${String(d.getMilliseconds()).padStart(3, '0')}`;
  let rest = '';
  for (const k of Object.keys(fields)) {
    const v = secretField(k, fields[k]) ? '[redacted]' : redact(fields[k], 1);
    if (v !== undefined) rest += ` ${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`;
  }
  return `${time} ${level.padEnd(5)} ${event}${rest}\n`;
}

/** Logs to stderr (journald captures it); the audit stream to its own 0600 file when configured. */
export function createLogger(options: LogOptions, stream: NodeJS.WritableStream & { isTTY?: boolean } = process.stderr): Logger {
  const json = options.format === 'json' || (options.format === 'auto' && stream.isTTY !== true);
  const line = json ? jsonLine : textLine;
  let threshold: number = LEVELS[options.level as Level] ?? LEVELS.info;
  let auditFd: number | undefined;
  if (options.audit_file !== undefined) {
    // Created 0600 before the first line: audit lines name projects and key ids.
    auditFd = openSync(options.audit_file, 'a', 0o600);
    chmodSync(options.audit_file, 0o600);
  }
  const at = (level: Level) => (event: string, fields: LogFields = {}) => {
    if (LEVELS[level] <= threshold) stream.write(line(level, event, fields));
  };
  return {
    error: at('error'),
    warn: at('warn'),
    info: at('info'),
    debug: at('debug'),
    audit(event, fields) {
      const entry = { audit: true, ...fields };
      // The audit file is always JSON; written before the key is used, so a crash cannot lose the record of an access.
      if (auditFd === undefined) stream.write(line('info', event, entry));
      else writeSync(auditFd, jsonLine('info', event, entry));
    },
    setLevel(level) {
      threshold = LEVELS[level as Level] ?? LEVELS.info;
    },
    async close() {
      if (auditFd !== undefined) {
        closeSync(auditFd);
        auditFd = undefined;
      }
      // Lines already handed to the stream are flushed by it; wait for what is buffered to be taken.
      await new Promise<void>((resolve) => {
        if (stream.write('')) resolve();
        else stream.once('drain', () => resolve());
      });
    },
  };
}
