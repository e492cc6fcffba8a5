/**
 * The daemon's log lines, as text: the one winston format in log.ts calls
 * these, so every entry, whatever its fields, passes the same redaction
 * filter on its way to a line. JSON with sorted keys and an ISO timestamp
 * (what winston's json format wrote), or "HH:mm:ss.SSS level message k=v"
 * on a terminal. Built in one pass, not by a chain of winston formats: that
 * chain (a redaction pass per field, a timestamp formatter,
 * safe-stable-stringify) cost a fifth of the daemon's CPU on the cached key
 * path (bench/key-cache.ts).
 */
export type LogFields = Record<string, string | number | boolean | null | undefined | string[] | Record<string, number>>;

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

export type LineFormat = (level: string, event: string, fields: LogFields) => string;

export const jsonLine: LineFormat = (level, event, fields) => {
  const entry: Record<string, unknown> = {};
  for (const k of Object.keys(fields)) entry[k] = secretField(k, fields[k]) ? '[redacted]' : redact(fields[k], 1);
  entry['level'] = level;
  entry['message'] = event;
  entry['timestamp'] = new Date().toISOString();
  return `${sortedJson(entry)}\n`;
};

export const textLine: LineFormat = (level, event, fields) => {
  const d = new Date();
  const two = (n: number) => String(n).padStart(2, '0');
  const time = `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}.${String(d.getMilliseconds()).padStart(3, '0')}`;
  let rest = '';
  for (const k of Object.keys(fields)) {
    const v = secretField(k, fields[k]) ? '[redacted]' : redact(fields[k], 1);
    if (v !== undefined) rest += ` ${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`;
  }
  return `${time} ${level.padEnd(5)} ${event}${rest}\n`;
};
