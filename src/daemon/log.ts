import { chmodSync, closeSync, openSync } from 'node:fs';
import winston from 'winston';
import type { LogOptions } from '../config/daemon-options.js';

/**
 * The daemon's logs. Library layers never log; the daemon logs once per
 * outcome. Secrets are redacted by construction: every entry passes a format
 * that drops byte arrays and any field whose name says secret, whatever the
 * caller handed in, so a careless field can never carry a key out.
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

export function redact(value: unknown, depth = 0): unknown {
  if (value instanceof Uint8Array) return '[redacted bytes]';
  if (depth > 4 || value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.map((v) => redact(v, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    // A number or boolean cannot carry key material; redacting one hid timings_ms.key, the key fetch's time, from every attach line.
    const secret = SECRET_FIELD.test(k) && k !== 'key_id' && k !== 'key_source' && k !== 'key_scope' && typeof v !== 'number' && typeof v !== 'boolean';
    out[k] = secret ? '[redacted]' : redact(v, depth + 1);
  }
  return out;
}

const redactFormat = winston.format((info) => {
  for (const key of Object.keys(info)) {
    if (key === 'level' || key === 'message') continue;
    const cleaned = redact({ [key]: info[key] });
    info[key] = (cleaned as Record<string, unknown>)[key];
  }
  return info;
});

function formatFor(options: LogOptions, tty: boolean): winston.Logform.Format {
  const json = options.format === 'json' || (options.format === 'auto' && !tty);
  if (json) return winston.format.combine(redactFormat(), winston.format.timestamp(), winston.format.json());
  return winston.format.combine(
    redactFormat(),
    winston.format.timestamp({ format: 'HH:mm:ss.SSS' }),
    winston.format.printf((info) => {
      const { level, message, timestamp, ...rest } = info;
      const fields = Object.entries(rest)
        .filter(([, v]) => v !== undefined)
        .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
        .join(' ');
      return `${String(timestamp)} ${level.padEnd(5)} ${String(message)}${fields === '' ? '' : ` ${fields}`}`;
    }),
  );
}

/** Logs to stderr (journald captures it); the audit stream to its own 0600 file when configured. */
export function createLogger(options: LogOptions, stream: NodeJS.WritableStream & { isTTY?: boolean } = process.stderr): Logger {
  const main = winston.createLogger({
    level: options.level,
    format: formatFor(options, stream.isTTY === true),
    transports: [new winston.transports.Stream({ stream })],
  });
  let auditLogger = main;
  if (options.audit_file !== undefined) {
    // Create it 0600 before winston opens it: audit lines name projects and key ids.
    closeSync(openSync(options.audit_file, 'a', 0o600));
    chmodSync(options.audit_file, 0o600);
    auditLogger = winston.createLogger({
      level: 'info',
      format: winston.format.combine(redactFormat(), winston.format.timestamp(), winston.format.json()),
      transports: [new winston.transports.File({ filename: options.audit_file })],
    });
  }
  const at = (level: string) => (event: string, fields: LogFields = {}) => main.log(level, event, fields);
  return {
    error: at('error'),
    warn: at('warn'),
    info: at('info'),
    debug: at('debug'),
    audit(event, fields) {
      auditLogger.log('info', event, { audit: true, ...fields });
    },
    setLevel(level) {
      main.level = level;
    },
    async close() {
      const done = (l: winston.Logger) => new Promise<void>((resolve) => {
        l.on('finish', () => resolve());
        l.end();
      });
      await Promise.all(auditLogger === main ? [done(main)] : [done(main), done(auditLogger)]);
    },
  };
}
