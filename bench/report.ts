/**
 * Writes docs/benchmarks.md and docs/benchmarks-attach.svg from every
 * bench/results/*.json present (the host benches and, when it has run,
 * bench/vm-attach.ts): the machine, each bench as a table with every figure
 * beside its target, the notes, and the latency chart of every row that
 * kept its samples. Run by `make bench` last; run it alone to redo the
 * report from results already there: node dist/bench/report.js
 */
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { latencyChart, type Series } from './chart.js';
import { formatFigure, formatTarget, machineInfo, meets, repoRoot, resultsDir, type BenchResult, type BenchRow, type MachineInfo } from './results.js';

/** Sections in this order; any other result follows, by name. */
const ORDER = ['vm-attach', 'key-cache', 'memory-start', 'fleet'];
const docsDir = join(repoRoot, 'docs');
const chartName = 'benchmarks-attach.svg';

function readResults(): BenchResult[] {
  if (!existsSync(resultsDir)) return [];
  const results = readdirSync(resultsDir)
    .filter((f) => f.endsWith('.json'))
    .map((f) => JSON.parse(readFileSync(join(resultsDir, f), 'utf8')) as BenchResult);
  const rank = (r: BenchResult) => (ORDER.includes(r.name) ? ORDER.indexOf(r.name) : ORDER.length);
  return results.sort((a, b) => rank(a) - rank(b) || a.name.localeCompare(b.name));
}

const cell = (s: string) => s.replace(/\|/g, '\\|').replace(/\n/g, ' ');

function figure(row: BenchRow): string {
  if (row.value !== undefined) return `${formatFigure(row.value)} ${row.unit}`;
  const n = row.samples === undefined ? '' : ` (n=${row.samples.length})`;
  return `p50 ${formatFigure(row.p50)} / p95 ${formatFigure(row.p95)} ${row.unit}${n}`;
}

function verdict(row: BenchRow): string {
  const met = meets(row);
  return met === undefined ? '' : met ? 'met' : '**missed**';
}

function machineLines(m: MachineInfo | undefined): string[] {
  if (m === undefined) return ['(not recorded)'];
  return [
    '| | |',
    '|---|---|',
    `| CPU | ${cell(m.cpu)}, ${m.cores} cores |`,
    `| RAM | ${m.ramGiB} GiB |`,
    `| kernel | ${cell(m.kernel)}${m.where === undefined ? '' : ` (${cell(m.where)})`} |`,
    `| Node.js | ${m.node} |`,
    `| cryptsetup | ${cell(m.cryptsetup)} (Debian cryptsetup-bin) |`,
    `| os-brick | ${cell(m.osBrick)} (Debian python3-os-brick) |`,
  ];
}

/** The code the figures came from, said in every section: a figure from uncommitted code cannot be reproduced. */
function provenanceLine(r: BenchResult): string {
  const p = r.provenance;
  if (p === undefined) return 'Code: **not recorded** (a results file from before provenance was kept).';
  if (p.clean) return `Code: commit \`${p.commit.slice(0, 12)}\`, clean tree.`;
  return `Code: commit \`${p.commit.slice(0, 12)}\` with **uncommitted changes**: ${p.changes.map((c) => `\`${cell(c.trim())}\``).join(', ')}.`;
}

function section(r: BenchResult, base: MachineInfo | undefined): string[] {
  const out = [`## ${r.title}`, ''];
  const m = r.machine;
  const differs = m !== undefined && base !== undefined && (m.kernel !== base.kernel || m.cpu !== base.cpu || m.where !== undefined);
  out.push(`\`bench/${r.name}.ts\`, ${r.date.replace('T', ' ').replace(/\.\d+Z$/, ' UTC')}${m?.load === undefined ? '' : `; load average at the end ${m.load}`}.`);
  if (differs && m !== undefined) out.push(`Measured on: ${m.where ?? ''} kernel ${m.kernel}, ${m.cpu}, ${m.cores} cores, cryptsetup ${m.cryptsetup}, os-brick ${m.osBrick}.`);
  out.push(provenanceLine(r));
  if (r.parameters !== undefined && Object.keys(r.parameters).length > 0) {
    out.push(`Parameters: ${Object.entries(r.parameters).map(([k, v]) => `${k} ${String(v)}`).join('; ')}.`);
  }
  out.push('', '| | measured | figure | target | |', '|---|---|---|---|---|');
  const footnotes: string[] = [];
  for (const row of r.rows) {
    let label = cell(row.label);
    if (row.note !== undefined) {
      footnotes.push(row.note);
      label += ` [${footnotes.length}]`;
    }
    out.push(`| ${cell(row.group ?? '')} | ${label} | ${figure(row)} | ${formatTarget(row)} | ${verdict(row)} |`);
  }
  out.push('');
  footnotes.forEach((note, i) => out.push(`${i + 1}. ${note}`));
  if (footnotes.length > 0) out.push('');
  for (const note of r.notes ?? []) out.push(note, '');
  return out;
}

/** Orange where the key came from the key manager, blue where it came from the cache, by the row's own words. */
function toneOf(label: string): string | undefined {
  if (/\b(cold|miss|uncached)\b/i.test(label)) return '#c0703a';
  if (/\b(warm|hit|cached|from the cache)\b/i.test(label)) return '#4a78b5';
  return undefined;
}

/** Which commit(s) the report's figures came from, and whether any came from an unclean tree. */
function commitsLine(rs: BenchResult[]): string {
  const commits = [...new Set(rs.map((r) => (r.provenance === undefined ? 'not recorded' : `\`${r.provenance.commit.slice(0, 12)}\``)))];
  const unclean = rs.filter((r) => r.provenance !== undefined && !r.provenance.clean).map((r) => `\`${r.name}\``);
  const unknown = rs.filter((r) => r.provenance === undefined).map((r) => `\`${r.name}\``);
  const state = [unclean.length === 0 ? '' : `**uncommitted changes** in: ${unclean.join(', ')}`, unknown.length === 0 ? '' : `code **not recorded** for: ${unknown.join(', ')}`].filter((x) => x !== '').join('; ') || 'every one from a clean tree';
  return `Figures from commit${commits.length === 1 ? '' : 's'} ${commits.join(', ')}; ${state}.`;
}

const results = readResults();
const base = results.find((r) => r.machine?.where === undefined)?.machine ?? machineInfo();
const series: Series[] = results.flatMap((r) =>
  r.rows.filter((row) => row.samples !== undefined && row.samples.length > 0 && row.unit === 'ms').map((row) => ({ label: `${r.name}: ${row.group === undefined ? '' : `${row.group}, `}${row.label}`, samples: row.samples ?? [], color: toneOf(row.label) })),
);
const missed = results.flatMap((r) => r.rows.filter((row) => meets(row) === false).map((row) => `${r.title}: ${row.group === undefined ? '' : `${row.group}, `}${row.label}`));
const lines = [
  '# Benchmarks',
  '',
  '<!-- Generated by `make bench` (bench/report.ts) from bench/results/*.json; edit those benches, not this file. -->',
  '',
  commitsLine(results),
  '',
  `Written ${new Date().toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC')} from ${results.length} result file(s): ${results.map((r) => `\`${r.name}\``).join(', ') || 'none'}. Benches never assert times; targets are those of issues 11, 22 and 23.`,
  '',
  '### Machine',
  '',
  ...machineLines(base),
  '',
  missed.length === 0 ? 'Every figure with a target meets it.' : `Targets missed (${missed.length}), each explained in its section: ${missed.join('; ')}.`,
  '',
];
if (series.length > 0) lines.push('### Attach latency', '', `![Attach latency distributions](${chartName})`, '');
for (const r of results) lines.push(...section(r, base));
writeFileSync(join(docsDir, 'benchmarks.md'), `${lines.join('\n').trimEnd()}\n`);
writeFileSync(join(docsDir, chartName), latencyChart(series, undefined, 'orange: key from the key manager (cold), blue: key from the cache (warm)'));
console.log(`written: docs/benchmarks.md (${results.length} result(s)), docs/${chartName} (${series.length} series)`);
