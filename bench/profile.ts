/**
 * Where the time went, from a V8 CPU profile (the .cpuprofile JSON that
 * `node --cpu-prof` writes, or what node:inspector's Profiler.stop returns):
 * self time grouped by function and file, and by category (this project's
 * src/ by area, Node's HTTP/net/stream internals, npm packages, native code,
 * GC, idle). The benches put the result beside each target they miss, so a
 * miss is explained by the run that measured it, not by a number typed in
 * from an older profile. Pure functions on the profile object; capture is in
 * bench/profile-capture.ts.
 */
import { repoRoot, type BenchRow } from './results.js';

/** The parts of V8's Profiler.Profile this reads (microseconds, V8's monotonic clock: process.hrtime's). */
export interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string }; children?: number[] }[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

export interface ProfileEntry {
  /** "functionName (file)"; a native function with its nearest JS caller (see nameOf). */
  name: string;
  category: string;
  ms: number;
  /** Of the sampled total (idle included). */
  percent: number;
}

export interface ProfileSummary {
  /** Time covered by the counted samples, ms. */
  totalMs: number;
  samples: number;
  /** By self time, largest first. */
  top: ProfileEntry[];
  categories: { category: string; ms: number; percent: number }[];
}

export interface SummaryOptions {
  /** Entries kept in `top`. @default 10 */
  top?: number;
  /** Only samples taken in [fromUs, toUs] (process.hrtime µs): a load window inside a longer profile. */
  window?: { fromUs: number; toUs: number };
  /** What project paths are relative to. @default the checkout's root */
  root?: string;
}

const HTTP_NET = /^node:(_http_\w+|http|https|net|stream|dgram|internal\/(http\w*|net|stream_base_commons|streams\/.*|js_stream_socket))$/;

/** A script URL as the report says it: repo-relative source, npm package path, or node:... as is. */
export function fileOf(url: string, root: string = repoRoot): string {
  if (url === '') return '(native)';
  if (url.startsWith('node:')) return url;
  const path = url.startsWith('file://') ? decodeURIComponent(url.slice('file://'.length)) : url;
  // node_modules is a symlink in worktrees and Node reports the real path: match the segment, not the root.
  const modules = path.lastIndexOf('/node_modules/');
  if (modules >= 0) return path.slice(modules + '/node_modules/'.length);
  const prefix = root.endsWith('/') ? root : `${root}/`;
  if (!path.startsWith(prefix)) return path;
  const relative = path.slice(prefix.length);
  // tsc mirrors the tree under dist/ (rootDir "."): name the source a reader would open.
  const compiled = /^dist\/(.+)\.js$/.exec(relative);
  return compiled?.[1] !== undefined ? `${compiled[1]}.ts` : relative;
}

/** The category of a frame: V8's pseudo-frames, native code, node internals, npm packages, project areas. */
export function categoryOf(functionName: string, url: string, root: string = repoRoot): string {
  if (url === '') {
    if (functionName === '(garbage collector)') return 'GC';
    if (functionName === '(idle)') return 'idle';
    if (functionName === '(program)' || functionName === '(root)') return 'V8 outside JS (compile, runtime)';
    return 'native code (V8 builtins, C++ and N-API calls)';
  }
  if (url.startsWith('node:')) {
    if (HTTP_NET.test(url)) return 'node: http/net/streams';
    if (url.startsWith('node:internal/modules/') || url === 'node:internal/main/run_main_module') return 'node: module loader';
    if (url === 'node:fs' || url.startsWith('node:internal/fs/')) return 'node: fs';
    return 'node: other internals';
  }
  const file = fileOf(url, root);
  if (url.includes('/node_modules/')) {
    const parts = file.split('/');
    return `npm: ${parts[0]?.startsWith('@') === true ? `${parts[0]}/${parts[1] ?? ''}` : (parts[0] ?? '?')}`;
  }
  const area = /^(src\/[^/]+|native|bench|test|scripts)\//.exec(file);
  return area?.[1] !== undefined ? `portcullis ${area[1]}` : 'other scripts';
}

/**
 * Self time per function and per category. A sample stands for the time up
 * to the next one (the last: up to endTime), as Chrome's profiler counts it;
 * with a window, only the part of each sample's time inside it counts.
 */
export function summarizeProfile(profile: CpuProfile, options: SummaryOptions = {}): ProfileSummary {
  const root = options.root ?? repoRoot;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parentOf = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parentOf.set(c, n.id);
  const samples = profile.samples ?? [];
  const deltas = profile.timeDeltas ?? [];
  const from = options.window?.fromUs ?? Number.NEGATIVE_INFINITY;
  const to = options.window?.toUs ?? Number.POSITIVE_INFINITY;
  const selfUs = new Map<number, number>();
  let counted = 0;
  let t = profile.startTime;
  for (let i = 0; i < samples.length; i++) {
    t += deltas[i] ?? 0;
    const end = i + 1 < samples.length ? t + (deltas[i + 1] ?? 0) : profile.endTime;
    const us = Math.max(0, Math.min(end, to) - Math.max(t, from));
    const id = samples[i];
    if (us <= 0 || id === undefined) continue;
    counted += 1;
    selfUs.set(id, (selfUs.get(id) ?? 0) + us);
  }
  const entries = new Map<string, { category: string; us: number }>();
  const categories = new Map<string, number>();
  let totalUs = 0;
  for (const [id, us] of selfUs) {
    const frame = byId.get(id)?.callFrame;
    if (frame === undefined) continue;
    totalUs += us;
    const category = categoryOf(frame.functionName, frame.url, root);
    categories.set(category, (categories.get(category) ?? 0) + us);
    const name = nameOf(id, byId, parentOf, root);
    entries.set(name, { category, us: (entries.get(name)?.us ?? 0) + us });
  }
  const pct = (us: number) => (totalUs === 0 ? 0 : Math.round((1000 * us) / totalUs) / 10);
  const ms = (us: number) => Math.round(us / 100) / 10;
  return {
    totalMs: ms(totalUs),
    samples: counted,
    top: [...entries]
      .sort((a, b) => b[1].us - a[1].us)
      .slice(0, options.top ?? 10)
      .map(([name, e]) => ({ name, category: e.category, ms: ms(e.us), percent: pct(e.us) })),
    categories: [...categories].sort((a, b) => b[1] - a[1]).map(([category, us]) => ({ category, ms: ms(us), percent: pct(us) })),
  };
}

/**
 * "fn (file)". A native function is named with its nearest JS caller
 * ("writev (native, from writeGeneric in node:internal/stream_base_commons)"):
 * the caller says whose call it was, and for N-API it is the only true name,
 * since every function of an addon runs through one C++ trampoline that V8's
 * profiler names after whichever of them was made last (native/: "notify").
 */
function nameOf(id: number, byId: Map<number, CpuProfile['nodes'][number]>, parentOf: Map<number, number>, root: string): string {
  const frame = byId.get(id)?.callFrame;
  if (frame === undefined) return '?';
  const fn = frame.functionName === '' ? '(anonymous)' : frame.functionName;
  if (frame.url !== '' || fn.startsWith('(')) return frame.url === '' ? fn : `${fn} (${fileOf(frame.url, root)})`;
  for (let p = parentOf.get(id); p !== undefined; p = parentOf.get(p)) {
    const caller = byId.get(p)?.callFrame;
    if (caller !== undefined && caller.url !== '') return `${fn} (native, from ${caller.functionName === '' ? '(anonymous)' : caller.functionName} in ${fileOf(caller.url, root)})`;
  }
  return `${fn} (native)`;
}

/** One paragraph's worth: "a (file) 12.3%, b (file) 4.5%, ..." */
export function formatTop(summary: ProfileSummary, n = 8): string {
  return summary.top.slice(0, n).map((e) => `${e.name} ${e.percent}%`).join(', ');
}

/** "node: http/net/streams 30.1%, portcullis src/daemon 12%, ..." (categories under `min` percent left out). */
export function formatCategories(summary: ProfileSummary, min = 1): string {
  const shown = summary.categories.filter((c) => c.percent >= min);
  const rest = summary.categories.length - shown.length;
  return `${shown.map((c) => `${c.category} ${c.percent}%`).join(', ')}${rest > 0 ? ` (${rest} more under ${min}% each)` : ''}`;
}

/** The largest `n` categories as report rows in `group` (unit %, no target), beside the figure they explain. */
export function categoryRows(summary: ProfileSummary, group: string, what: string, n = 3): BenchRow[] {
  return summary.categories.slice(0, n).map((c, i) => ({
    group,
    label: `profile of ${what}: ${c.category}`,
    unit: '%',
    value: c.percent,
    ...(i === 0 ? { note: `self time, as a share of the ${summary.totalMs.toLocaleString('en-US')} ms sampled (${summary.samples.toLocaleString('en-US')} samples); the top functions are in the notes below` } : {}),
  }));
}

/** A note's paragraph: what was profiled, then the categories and the top functions by self time. */
export function profileParagraph(what: string, summary: ProfileSummary | string): string {
  if (typeof summary === 'string') return `Profile of ${what}: not taken (${summary}).`;
  return `Profile of ${what} (${summary.totalMs.toLocaleString('en-US')} ms, ${summary.samples.toLocaleString('en-US')} samples, self time): by category ${formatCategories(summary)}; by function ${formatTop(summary)}.`;
}
