/**
 * The attach latency chart for docs/benchmarks.md: one box plot per row
 * that has samples (box p25–p75, median bar, whiskers p5–p95, dots at min
 * and max) on a shared logarithmic millisecond axis, because cached and
 * uncached attaches differ by orders of magnitude. Hand-written SVG: no
 * dependency, readable in a diff.
 */
import { quantile } from './results.js';

export interface Series {
  /** "fleet — 16 hosts × 64 volumes: cold: attach (key path) latency" */
  label: string;
  /** Milliseconds. */
  samples: readonly number[];
  /** Box colour; default alternates. */
  color?: string;
}

/** Width of the plot itself; the label column is as wide as the longest label needs. */
const PLOT_W = 540;
const ROW_H = 34;
const TOP = 40;
const BOTTOM = 60;
const RIGHT = 24;

const escape = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const fmt = (x: number) => (x >= 1000 ? `${x / 1000} s` : `${x} ms`);
const n = (x: number) => x.toFixed(1);

/** The SVG text; an empty chart says so rather than drawing nothing. */
export function latencyChart(series: readonly Series[], title = 'Attach latency (ms, log scale)', legend = ''): string {
  const rows = series.filter((s) => s.samples.length > 0);
  // About 6.6 px per character of 12 px sans-serif.
  const LABEL_W = Math.round(Math.min(900, Math.max(200, Math.max(0, ...rows.map((s) => s.label.length)) * 6.6 + 20)));
  const W = LABEL_W + PLOT_W;
  const height = TOP + Math.max(1, rows.length) * ROW_H + BOTTOM;
  const all = rows.flatMap((s) => [Math.min(...s.samples), Math.max(...s.samples)]).map((x) => Math.max(x, 0.01));
  const lo = 10 ** Math.floor(Math.log10(Math.min(...all, 1)));
  const hi = 10 ** Math.ceil(Math.log10(Math.max(...all, 10)));
  const x = (ms: number) => LABEL_W + ((Math.log10(Math.max(ms, lo)) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo))) * (W - LABEL_W - RIGHT);
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${height}" viewBox="0 0 ${W} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${height}" fill="#fff"/>`,
    `<text x="${W / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">${escape(title)}</text>`,
  ];
  for (let decade = lo; decade <= hi; decade *= 10) {
    const gx = n(x(decade));
    out.push(`<line x1="${gx}" y1="${TOP - 6}" x2="${gx}" y2="${height - BOTTOM + 6}" stroke="#ddd"/>`);
    out.push(`<text x="${gx}" y="${height - BOTTOM + 22}" text-anchor="middle" fill="#444">${fmt(Number(decade.toPrecision(1)))}</text>`);
  }
  if (rows.length === 0) out.push(`<text x="${W / 2}" y="${TOP + 20}" text-anchor="middle" fill="#888">no latency samples in bench/results yet</text>`);
  rows.forEach((s, i) => {
    const cy = TOP + i * ROW_H + ROW_H / 2;
    const [p5, p25, p50, p75, p95] = [0.05, 0.25, 0.5, 0.75, 0.95].map((q) => quantile(s.samples, q)) as [number, number, number, number, number];
    const min = Math.min(...s.samples);
    const max = Math.max(...s.samples);
    const fill = s.color ?? (i % 2 === 0 ? '#4a78b5' : '#8a8a8a');
    out.push(
      `<g><title>${escape(`${s.label}: n=${s.samples.length}, p5 ${p5}, p25 ${p25}, median ${p50}, p75 ${p75}, p95 ${p95}, max ${max} ms`)}</title>`,
      `<text x="${LABEL_W - 10}" y="${cy + 4}" text-anchor="end">${escape(s.label)}</text>`,
      `<line x1="${n(x(p5))}" y1="${cy}" x2="${n(x(p95))}" y2="${cy}" stroke="#333"/>`,
      `<line x1="${n(x(p5))}" y1="${cy - 6}" x2="${n(x(p5))}" y2="${cy + 6}" stroke="#333"/>`,
      `<line x1="${n(x(p95))}" y1="${cy - 6}" x2="${n(x(p95))}" y2="${cy + 6}" stroke="#333"/>`,
      `<rect x="${n(x(p25))}" y="${cy - 10}" width="${n(Math.max(1, x(p75) - x(p25)))}" height="20" fill="${fill}" fill-opacity="0.55" stroke="${fill}"/>`,
      `<line x1="${n(x(p50))}" y1="${cy - 10}" x2="${n(x(p50))}" y2="${cy + 10}" stroke="#000" stroke-width="2"/>`,
      `<circle cx="${n(x(min))}" cy="${cy}" r="2.5" fill="#333"/>`,
      `<circle cx="${n(x(max))}" cy="${cy}" r="2.5" fill="#333"/>`,
      `<text x="${n(Math.min(W - RIGHT, x(max) + 6))}" y="${cy - 8}" font-size="10" fill="#555">n=${s.samples.length}</text>`,
      '</g>',
    );
  });
  out.push(`<text x="${LABEL_W}" y="${height - 22}" font-size="11" fill="#555">box: p25–p75, bar: median, whiskers: p5–p95, dots: min and max</text>`);
  if (legend !== '') out.push(`<text x="${LABEL_W}" y="${height - 8}" font-size="11" fill="#555">${escape(legend)}</text>`);
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
