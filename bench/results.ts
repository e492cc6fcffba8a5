/**
 * What every bench writes to bench/results/NAME.json and bench/report.ts
 * reads back into docs/benchmarks.md. The VM bench (bench/vm-attach.ts)
 * imports these types too, so the report needs no per-bench code: a result
 * is a list of rows, each a figure (or a distribution) beside its target.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, release, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** What a figure must be to meet its target: `value` (or p95 for a distribution) compared with `op`. */
export interface Target {
  op: '>=' | '<=';
  value: number;
  /** Which figure the target applies to. @default 'value' when the row has one, else 'p95' */
  of?: 'value' | 'p50' | 'p95';
}

export interface BenchRow {
  /** What was measured, as a table row would say it ("cached get(), locked memory"). */
  label: string;
  /** Unit of value, p50, p95 and samples: "ops/s", "req/s", "ms", "MB", "bytes", "calls". */
  unit: string;
  /** Table group inside a result ("in-process", "over the socket"); rows without one form their own. */
  group?: string;
  /** A single figure: a rate, a count, a size. */
  value?: number;
  /** Distribution figures, in `unit`. */
  p50?: number;
  p95?: number;
  target?: Target;
  /** Raw observations in `unit` (latencies in ms); rows that have them are drawn in the attach latency chart. */
  samples?: number[];
  /** One line said under the table about this row (how it was measured, why it misses). */
  note?: string;
}

export interface MachineInfo {
  cpu: string;
  cores: number;
  ramGiB: number;
  kernel: string;
  node: string;
  /** dpkg-query versions, or "not installed". */
  cryptsetup: string;
  osBrick: string;
  /** 1-, 5- and 15-minute load averages when the bench finished: the machine may be shared. */
  load?: string;
  /** Where the figures were taken when it is not this host's kernel ("qemu TCG guest"). */
  where?: string;
}

/** Which code produced the figures: the commit, and whether the tree was exactly it. */
export interface Provenance {
  /** `git rev-parse HEAD`, or "unknown" outside a git checkout. */
  commit: string;
  /** True when `git status --porcelain` (nothing ignored beyond .gitignore) printed nothing. */
  clean: boolean;
  /** Its lines when not clean (at most 20): what differed from the commit. */
  changes: string[];
}

export interface BenchResult {
  /** File stem under bench/results/ and the report's section key: "key-cache". */
  name: string;
  /** Section heading in the report. */
  title: string;
  /** ISO 8601, when the bench finished. */
  date: string;
  machine?: MachineInfo;
  /** Absent in results written before provenance was recorded. */
  provenance?: Provenance;
  /** Parameters the figures depend on (rounds, connections, N×M). */
  parameters?: Record<string, string | number | boolean>;
  rows: BenchRow[];
  /** Paragraphs printed under the tables: method, caveats, what the figures predict. */
  notes?: string[];
}

/** The checkout's root, found from this file whether it runs from bench/ or dist/bench/. */
export const repoRoot: string = (() => {
  const here = dirname(fileURLToPath(import.meta.url));
  return here.endsWith(join('dist', 'bench')) ? join(here, '..', '..') : join(here, '..');
})();
export const resultsDir = join(repoRoot, 'bench', 'results');

function dpkgVersion(pkg: string): string {
  try {
    return execFileSync('dpkg-query', ['-W', '-f=${Version}', pkg], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim() || 'not installed';
  } catch {
    return 'not installed';
  }
}

/** This host's facts, for the report header. */
export function machineInfo(): MachineInfo {
  const model = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? cpus()[0]?.model ?? 'unknown';
  return {
    cpu: model.trim(),
    cores: cpus().length,
    ramGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    kernel: release(),
    node: process.version,
    cryptsetup: dpkgVersion('cryptsetup-bin'),
    osBrick: dpkgVersion('python3-os-brick'),
    load: loadavg().map((x) => x.toFixed(2)).join(' '),
  };
}

function git(args: string[]): string | undefined {
  try {
    return execFileSync('git', args, { cwd: repoRoot, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  } catch {
    return undefined;
  }
}

/**
 * The checkout's commit and state. Taken when this module loads, before the
 * bench writes anything; `make bench` takes it once before its first bench
 * (PORTCULLIS_BENCH_COMMIT, PORTCULLIS_BENCH_STATUS), since every bench
 * rewrites a tracked results file and the next one would see that as a change.
 */
function provenanceNow(): Provenance {
  const commit = process.env['PORTCULLIS_BENCH_COMMIT'] ?? git(['rev-parse', 'HEAD'])?.trim() ?? 'unknown';
  const status = process.env['PORTCULLIS_BENCH_COMMIT'] !== undefined ? (process.env['PORTCULLIS_BENCH_STATUS'] ?? '') : (git(['status', '--porcelain']) ?? 'git status failed');
  const changes = status.split('\n').filter((l) => l.trim() !== '');
  return { commit, clean: commit !== 'unknown' && changes.length === 0, changes: changes.slice(0, 20) };
}
const provenanceAtStart = provenanceNow();

/** Whether a row meets its target; undefined when it has none or lacks the figure. */
export function meets(row: BenchRow): boolean | undefined {
  if (row.target === undefined) return undefined;
  const of = row.target.of ?? (row.value !== undefined ? 'value' : 'p95');
  const figure: number | null | undefined = row[of];
  if (figure === undefined || figure === null || Number.isNaN(figure)) return undefined;
  return row.target.op === '>=' ? figure >= row.target.value : figure <= row.target.value;
}

/** The q-quantile (nearest rank) of xs; NaN for none. */
export function quantile(xs: readonly number[], q: number): number {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] ?? Number.NaN;
}

/** p50 and p95 of samples, rounded for a table. */
export function distribution(samples: readonly number[], digits = 2): { p50: number; p95: number } {
  const r = (x: number) => Math.round(x * 10 ** digits) / 10 ** digits;
  return { p50: r(quantile(samples, 0.5)), p95: r(quantile(samples, 0.95)) };
}

/** Milliseconds since `start` (process.hrtime.bigint()). */
export const msSince = (start: bigint): number => Number(process.hrtime.bigint() - start) / 1e6;

/** A figure as a table cell: thousands separated, at most 3 significant decimals. */
export function formatFigure(x: number | null | undefined): string {
  // JSON turns NaN (a figure that could not be taken) into null.
  if (x === undefined || x === null || Number.isNaN(x)) return '–';
  const digits = Math.abs(x) >= 100 ? 0 : Math.abs(x) >= 10 ? 1 : 2;
  return x.toLocaleString('en-US', { maximumFractionDigits: digits });
}

export function formatTarget(row: BenchRow): string {
  return row.target === undefined ? '' : `${row.target.op === '>=' ? '≥' : '≤'} ${formatFigure(row.target.value)} ${row.unit}`;
}

/** The rows as a plain-text table on stdout (the bench's own print). */
export function printRows(result: BenchResult): void {
  const lines = result.rows.map((row) => {
    const figure = row.value !== undefined ? formatFigure(row.value) : `p50 ${formatFigure(row.p50)} / p95 ${formatFigure(row.p95)}`;
    const met = meets(row);
    return [row.group === undefined ? row.label : `${row.group}: ${row.label}`, `${figure} ${row.unit}`, formatTarget(row), met === undefined ? '' : met ? 'met' : 'MISSED'];
  });
  const widths = [0, 1, 2].map((i) => Math.max(...lines.map((l) => l[i]?.length ?? 0)));
  const p = result.provenance;
  console.log(`\n${result.title}${p === undefined ? '' : ` (commit ${p.commit.slice(0, 12)}, ${p.clean ? 'clean tree' : `UNCOMMITTED CHANGES: ${p.changes.join('; ')}`})`}`);
  for (const l of lines) console.log(`  ${l.map((cell, i) => cell.padEnd(widths[i] ?? 0)).join('  ').trimEnd()}`);
  for (const note of result.notes ?? []) console.log(`  note: ${note}`);
}

/** Writes bench/results/NAME.json and prints the table. */
export function writeResult(result: Omit<BenchResult, 'date' | 'machine'> & { machine?: MachineInfo }): string {
  const full: BenchResult = { ...result, date: new Date().toISOString(), machine: result.machine ?? machineInfo(), provenance: provenanceAtStart };
  mkdirSync(resultsDir, { recursive: true });
  const path = join(resultsDir, `${full.name}.json`);
  writeFileSync(path, `${JSON.stringify(full, null, 1)}\n`);
  printRows(full);
  console.log(`  written: ${path}`);
  return path;
}
