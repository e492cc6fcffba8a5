/** Small formatters for the CLI's human output; --json prints raw values instead. */

export function dash(value: string | number | null | undefined): string {
  return value === null || value === undefined || value === '' ? '-' : String(value);
}

export function yesNo(value: boolean | undefined): string {
  return value === true ? 'yes' : 'no';
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/** 1056964608 → "1008.0 MiB"; null → "-". */
export function bytes(value: number | null | undefined): string {
  if (value === null || value === undefined) return '-';
  let n = value;
  let unit = 0;
  while (n >= 1024 && unit < UNITS.length - 1) {
    n /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${n} B` : `${n.toFixed(1)} ${UNITS[unit] ?? ''}`;
}

/** 93784 → "1d 2h 3m"; 42 → "42s". */
export function duration(seconds: number | undefined): string {
  if (seconds === undefined || !Number.isFinite(seconds)) return '-';
  const s = Math.max(0, Math.round(seconds));
  const parts: [number, string][] = [[Math.floor(s / 86_400), 'd'], [Math.floor((s % 86_400) / 3600), 'h'], [Math.floor((s % 3600) / 60), 'm']];
  const shown = parts.filter(([n]) => n > 0).map(([n, u]) => `${n}${u}`);
  return shown.length === 0 ? `${s}s` : shown.join(' ');
}

/** hits / (hits + misses) as "97.5%", or "-" before the first lookup. */
export function ratio(part: number, whole: number): string {
  return whole > 0 ? `${((part / whole) * 100).toFixed(1)}%` : '-';
}
