/**
 * portcullisd's memory and start: time from spawn to READY=1 (sd_notify, on
 * a NOTIFY_SOCKET this bench holds), idle RSS, and RSS and locked memory
 * (VmLck) once 10,000 keys are cached; with --expose-gc, also the exact JS
 * heap per cache entry in-process. The start is broken down from the same
 * run (node's own start, the imports, the rest) and one more start is
 * profiled. Local keystore; the daemon is the real
 * dist/src/daemon/portcullisd.js. Writes bench/results/memory-start.json;
 * asserts nothing.
 * Run: make build && nice -n 10 node --expose-gc dist/bench/memory-start.js [STARTS] [KEYS]
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { validateConfig } from '../src/config/load.js';
import { openCachedKeyManager, openKeyManager } from '../src/keyclient/open.js';
import { plainAllocator } from '../src/util/secure-memory.js';
import { lockedAllocator } from '../native/secure-allocator.js';
import { secureStats } from '../native/index.js';
import { pageSize } from '../src/daemon/memlock.js';
import { processMemory, startBenchDaemon, type BenchDaemon } from './daemon.js';
import { startNotifyListener } from './notify-listener.js';
import { distribution, repoRoot, type BenchRow, writeResult } from './results.js';
import { categoryRows, profileParagraph, summarizeProfile, type ProfileSummary } from './profile.js';
import { cpuProfArgs, readCpuProfile } from './profile-capture.js';

const starts = Math.min(50, Math.max(1, Number(process.argv[2] ?? 10)));
const keyCount = Math.min(100_000, Math.max(100, Number(process.argv[3] ?? 10_000)));
const ctx = { projectId: 'bench' };
const dir = mkdtempSync(join(tmpdir(), 'portcullis-memory-'));
const keyManagerConfig = { key_manager: { backend: 'local', local: { path: join(dir, 'keystore.db'), kek_file: join(dir, 'kek') } } };
const { config } = validateConfig(keyManagerConfig, 'bench');
const daemonConfig = { ...keyManagerConfig, cache: { max_entries: keyCount * 2 }, limits: { max_pending_requests: 1000 } };
const MB = 1024 * 1024;
const page = pageSize();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function makeKeys(count: number): Promise<string[]> {
  const keys = await openKeyManager(config, { allocator: plainAllocator() });
  try {
    const ids: string[] = [];
    for (let i = 0; i < count; i++) ids.push(await keys.createKey(ctx, { algorithm: 'aes', length: 512 }));
    return ids;
  } finally {
    await keys.close();
  }
}

/** Attaches whose key is fetched and cached, then E_DEVICE_NOT_FOUND (no device-mapper here), `width` at a time. */
async function fetchThrough(daemon: BenchDaemon, ids: readonly string[], width = 32): Promise<void> {
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < ids.length; i = next++) {
      const answer = await daemon.call('PUT', `/v1/volumes/mem-${i % 64}`, { device: `/dev/portcullis-bench-absent-${i}`, provider: 'luks2', key: { id: ids[i] }, project_id: ctx.projectId });
      const code = (answer.body as { error?: { code?: string } }).error?.code;
      if (code !== 'E_DEVICE_NOT_FOUND') throw new Error(`expected the key then E_DEVICE_NOT_FOUND, got ${answer.status} ${answer.text}`);
    }
  };
  await Promise.all(Array.from({ length: width }, worker));
}

async function startTimes(ids: readonly string[]): Promise<{ samples: number[]; idleRss: number; idleLocked: number; daemon: BenchDaemon }> {
  const listener = await startNotifyListener(join(dir, 'notify.sock'));
  const samples: number[] = [];
  try {
    for (let i = 0; ; i++) {
      const t0 = process.hrtime.bigint();
      const daemon = await startBenchDaemon(daemonConfig, { dir, env: { NOTIFY_SOCKET: listener.path }, noWait: true });
      const ready = await listener.next('READY=1', t0, 30_000);
      samples.push(Number(ready - t0) / 1e6);
      if (i + 1 < starts) {
        await daemon.stop();
        continue;
      }
      // The last one stays up: idle, then filled.
      await sleep(3000);
      const idle = processMemory(daemon.pid);
      void ids;
      return { samples, idleRss: idle.rss, idleLocked: idle.locked, daemon };
    }
  } finally {
    listener.stop();
  }
}

/** The JS heap one cache entry keeps, in this process (needs --expose-gc). */
async function heapPerEntry(ids: readonly string[]): Promise<{ heap: number; locked: number } | undefined> {
  const gc = Reflect.get(globalThis, 'gc') as (() => void) | undefined;
  if (typeof gc !== 'function') return undefined;
  const keys = await openCachedKeyManager({ ...config, cache: { ...config.cache, max_entries: keyCount * 2 } }, { allocator: lockedAllocator() });
  try {
    (await keys.get(ctx, ids[0] ?? '')).zeroize();
    gc();
    const heap0 = process.memoryUsage().heapUsed;
    const locked0 = secureStats().lockedBytes;
    for (const id of ids) (await keys.get(ctx, id)).zeroize();
    gc();
    return { heap: (process.memoryUsage().heapUsed - heap0) / ids.length, locked: (secureStats().lockedBytes - locked0) / ids.length };
  } finally {
    await keys.close();
  }
}

/** Spawn to exit of `node -e 0`: the runtime's own start, which no daemon change can go below. */
function bareNodeStart(): number[] {
  return Array.from({ length: starts }, () => {
    const t0 = process.hrtime.bigint();
    spawnSync(process.execPath, ['-e', '0']);
    return Number(process.hrtime.bigint() - t0) / 1e6;
  });
}

/**
 * Spawn to the end of the imports of a node that only imports `specifier`
 * from the checkout (the daemon's module graph, what --version also pays, or
 * one package of it): the child writes one byte once they are done, so its
 * exit is not counted, as READY=1 counts none.
 */
async function moduleLoad(specifier = join(repoRoot, 'dist', 'src', 'daemon', 'main.js')): Promise<number[]> {
  const samples: number[] = [];
  for (let i = 0; i < starts; i++) {
    const t0 = process.hrtime.bigint();
    const child = spawn(process.execPath, ['--input-type=module', '-e', `await import(${JSON.stringify(specifier)}); process.stdout.write('.')`], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'ignore'] });
    const done = await new Promise<bigint | undefined>((resolve) => {
      child.stdout.once('data', () => resolve(process.hrtime.bigint()));
      child.once('exit', () => resolve(undefined));
    });
    await new Promise((r) => (child.exitCode === null ? child.once('exit', r) : r(undefined)));
    if (done === undefined) throw new Error(`node importing ${specifier} exited without finishing its imports`);
    samples.push(Number(done - t0) / 1e6);
  }
  return samples;
}

/**
 * Where one daemon start goes, for the start target: a start under node
 * --cpu-prof, from spawn to READY=1 only (V8's profile and process.hrtime
 * share a clock, so the samples after READY=1, and the shutdown that writes
 * the profile, are left out). One start, not the measured ones: the
 * profiler slows the start it watches a little. In `dir`, its own directory.
 */
async function profileStart(config: Record<string, unknown>, dir: string): Promise<{ summary: ProfileSummary; readyMs: number } | string> {
  const profDir = join(dir, 'cpu-profile');
  mkdirSync(profDir, { recursive: true, mode: 0o700 });
  const listener = await startNotifyListener(join(dir, 'notify.sock'));
  let window: { fromUs: number; toUs: number };
  try {
    const t0 = process.hrtime.bigint();
    const daemon = await startBenchDaemon(config, { dir, env: { NOTIFY_SOCKET: listener.path }, noWait: true, execArgv: cpuProfArgs(profDir) });
    try {
      const ready = await listener.next('READY=1', t0, 30_000);
      window = { fromUs: Number(t0 / 1000n), toUs: Number(ready / 1000n) };
    } finally {
      // SIGTERM: a normal exit, which is when node writes the profile.
      await daemon.stop();
    }
    const profile = await readCpuProfile(profDir, 10_000);
    if (profile === undefined) return `no profile written within 10 s of the daemon's exit (code ${String(daemon.child.exitCode)}, signal ${String(daemon.child.signalCode)})`;
    return { summary: summarizeProfile(profile, { top: 10, window }), readyMs: (window.toUs - window.fromUs) / 1000 };
  } finally {
    listener.stop();
  }
}

// The keystore, its KEK and the logs go when the bench does.
process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
const bare = distribution(bareNodeStart(), 0);
const modules = distribution(await moduleLoad(), 0);
// The logging library alone: the one import the start target was said to miss by.
const winstonOnly = distribution(await moduleLoad('winston'), 0);
const ids = await makeKeys(keyCount + 1);
const profiled = await profileStart(daemonConfig, join(dir, 'profiled-start'));
const [warm = '', ...rest] = ids;
const { samples, idleRss, idleLocked, daemon } = await startTimes(ids);
let filled;
let warmed;
try {
  // Request handling's own heap first (one cached key, as many requests), so the next delta is the keys'.
  await fetchThrough(daemon, Array.from({ length: keyCount }, () => warm));
  await sleep(2000);
  warmed = processMemory(daemon.pid);
  await fetchThrough(daemon, rest);
  await sleep(2000);
  filled = processMemory(daemon.pid);
  const entries = ((await daemon.call('GET', '/v1/cache')).body as { entries: number }).entries;
  if (entries !== keyCount + 1) throw new Error(`expected ${keyCount + 1} cached keys, the daemon has ${entries}`);
} finally {
  await daemon.stop();
}
const perKeyRss = (filled.rss - warmed.rss) / keyCount;
const perKeyLocked = (filled.locked - warmed.locked) / keyCount;
const heap = await heapPerEntry(rest);
const start = distribution(samples, 0);
const rows: BenchRow[] = [
  { group: 'start', label: 'spawn to READY=1 (sd_notify)', unit: 'ms', ...start, target: { op: '<=', value: 300, of: 'p50' }, note: `${starts} starts; node, module loading, config, local keystore, socket, adoption attempt (fails fast: no device-mapper here)` },
  { group: 'start', label: 'spawn to READY=1 beyond node\'s own start (p50 less node -e 0\'s p50, same run)', unit: 'ms', value: start.p50 - bare.p50, target: { op: '<=', value: 150 }, note: `${start.p50} − ${bare.p50} ms` },
  { group: 'start', label: 'reference: node -e 0, spawn to exit (not portcullisd)', unit: 'ms', ...bare, note: 'the runtime\'s own start on this machine under the same load' },
  { group: 'start', label: 'reference: node importing the daemon\'s modules, spawn to the imports done', unit: 'ms', ...modules, note: 'dist/src/daemon/main.js and everything it imports, nothing run' },
  { group: 'start', label: 'of the start: importing the daemon\'s modules (p50 of the import row less node -e 0\'s)', unit: 'ms', value: modules.p50 - bare.p50 },
  { group: 'start', label: 'of the start: from the imports to READY=1 (p50 to READY=1 less the import row\'s)', unit: 'ms', value: start.p50 - modules.p50, note: 'config, privileged helper, keystore, adoption attempt, socket, first health check: the daemon\'s own start-up work' },
  { group: 'start', label: 'of the imports: winston alone (p50 of node importing only winston less node -e 0\'s)', unit: 'ms', value: winstonOnly.p50 - bare.p50, note: 'a node importing nothing but winston, spawn to the import done: what winston and its dependencies cost on their own' },
  ...(typeof profiled === 'string' ? [] : categoryRows(profiled.summary, 'start', 'one start, spawn to READY=1', 4)),
  { group: 'idle', label: 'RSS, idle after start', unit: 'MB', value: round(idleRss / MB), target: { op: '<=', value: 80 } },
  { group: 'idle', label: 'locked (VmLck), idle', unit: 'KiB', value: idleLocked / 1024, note: 'the local keystore\'s KEK' },
  { group: `${keyCount.toLocaleString('en-US')} cached keys`, label: 'RSS', unit: 'MB', value: round(filled.rss / MB) },
  { group: `${keyCount.toLocaleString('en-US')} cached keys`, label: 'locked (VmLck)', unit: 'MB', value: round(filled.locked / MB) },
  { group: `${keyCount.toLocaleString('en-US')} cached keys`, label: 'locked per cached key', unit: 'bytes', value: Math.round(perKeyLocked), target: { op: '<=', value: 128 }, note: `64-byte keys in 64-byte slots of shared ${page}-byte locked slabs (VmLck growth over the fill, per key)` },
  { group: `${keyCount.toLocaleString('en-US')} cached keys`, label: 'RSS per cached key beyond its locked slot', unit: 'bytes', value: Math.round(perKeyRss - perKeyLocked), target: { op: '<=', value: 1024 }, note: 'RSS growth over the fill, less VmLck growth, per key; request handling was warmed first with as many requests for one key' },
  ...(heap === undefined
    ? []
    : [{ group: `${keyCount.toLocaleString('en-US')} cached keys`, label: 'JS heap per cache entry, in-process after GC', unit: 'bytes', value: Math.round(heap.heap), target: { op: '<=' as const, value: 1024 }, note: `exact, with --expose-gc; locked per entry ${Math.round(heap.locked)} bytes` }]),
];
writeResult({
  name: 'memory-start',
  title: 'Memory and start',
  parameters: { starts, keys: keyCount, page_bytes: page, rss_idle_bytes: idleRss, rss_warmed_bytes: warmed.rss, rss_filled_bytes: filled.rss, hwm_filled_bytes: filled.hwm },
  rows,
  notes: [
    `Start: of the p50 ${start.p50} ms to READY=1, node itself takes ${bare.p50} ms, importing the module graph ${modules.p50 - bare.p50} ms more, and the daemon's own start-up work after that (the config, the privileged helper, started and greeted before anything is adopted, the local keystore with its KEK, the failed adoption: no device-mapper here, the socket and the first backend health check) ${start.p50 - modules.p50} ms. Importing is mostly Node's ESM loader reading and compiling about 200 modules one by one; zod and yaml validate the config, which has to happen before READY, and winston (the team's logging library) is imported before the first log line. Off the start path since issue 22: the backends the config does not name (registry.ts keeps their option schemas; a daemon on the local keystore no longer loads Barbican's HTTP client or KMIP's TTLV codec), and prom-client with @opentelemetry/api (now loaded right after READY=1, its early counts replayed). Where one start's time goes is the profile below, in which module loading shows as node: module loader (V8 compiling each module is counted in the loader's compileSourceTextModule for ES modules and wrapSafe for CommonJS ones), each package's top-level code under its npm name, and waiting (for the helper, the keystore, the socket) as idle; node's own start before V8 runs is not sampled. The import rows are spawn to the imports done in a separate node each (node -e 0 is spawn to exit, a few ms more than its start) and the breakdown is differences of medians from the same run, so under load a part can come out a few ms either way. Node 22's module compile cache would be the next step.`,
    profileParagraph(`one start under node --cpu-prof, spawn to READY=1${typeof profiled === 'string' ? '' : ` (${Math.round(profiled.readyMs)} ms with the profiler on)`}`, typeof profiled === 'string' ? profiled : profiled.summary),
    `RSS per cached key is an upper bound: the daemon cannot be made to collect garbage before it is read, so V8's heap slack from the ${keyCount.toLocaleString('en-US')} requests that filled the cache counts too, as do the native record and N-API reference of each locked slot (malloc, outside the JS heap) and the keystore's SQLite page cache. Since the key path lends the cache's bytes instead of copying them, the warm-up requests before the fill make less garbage, so more of the heap's growth to its working size lands in the fill; an in-process run of 3.2 million lends levels off at a constant RSS (no leak). The exact JS heap per cache entry, measured in-process after a forced GC, is the row below it: a cache entry (key string, id, metadata with its Date, the secret as a class instance with private fields, the external Buffer, the Map slot). It was about 1,360 bytes before issue 11's work (a getter made of a fresh closure gave every buffer its own hidden class) and about 1,010–1,200 before issue 22's, whose secret buffers carried three closures each; they are now class instances with their methods on the prototype.`,
    `Locked memory per key: secrets up to 2,048 bytes are slots (the next power of two, at least 16 bytes) of shared locked slab pages, each slab its own mapping with MADV_DONTDUMP and MADV_WIPEONFORK; larger ones keep pages of their own. A 64-byte XTS key takes 64 bytes of RLIMIT_MEMLOCK (a ${page}-byte page per key before issue 22), so ${keyCount.toLocaleString('en-US')} cached keys lock about ${round((keyCount * 64) / MB)} MB, and the default 8 MiB RLIMIT_MEMLOCK holds about 130,000 keys. Each slot is still its own external Buffer, so wiping one detaches exactly it; the cache lends its slot to the daemon's key path instead of copying it per request.`,
  ],
});

function round(x: number): number {
  return Math.round(x * 10) / 10;
}
