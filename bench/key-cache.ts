/**
 * The key cache's throughput: cached get()s per second in-process (the
 * daemon's stack, cache(retry(local keystore)), in locked memory as the
 * daemon runs it and in plain memory beside it); requests per second over a
 * real portcullisd's socket (autocannon, unix socket) for GET /v1/health,
 * an attach with provider nop (answered before any key or device), and an
 * attach whose key comes from the cache and whose device is absent (the
 * whole key path of an idempotent re-attach, then E_DEVICE_NOT_FOUND: this
 * host has no device-mapper); and single-flight: 1,000 concurrent misses on
 * one key, counted at the real backend in-process and through the daemon's
 * own cache figures. Where the time goes beside the missed targets comes
 * from profiles taken in the run (bench/key-cache-explain.ts). Writes
 * bench/results/key-cache.json; asserts nothing.
 * Run: make build && nice -n 10 node dist/bench/key-cache.js [SECONDS]
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import autocannon from 'autocannon';
import { validateConfig } from '../src/config/load.js';
import { cachingKeyManager } from '../src/keyclient/cache.js';
import type { KeyManager } from '../src/keyclient/key-manager.js';
import { openCachedKeyManager, openKeyManager } from '../src/keyclient/open.js';
import { plainAllocator, type SecureAllocator } from '../src/util/secure-memory.js';
import { lockedAllocator } from '../native/secure-allocator.js';
import { request } from '../test/fixtures/daemon.js';
import { startBenchDaemon, type BenchDaemon } from './daemon.js';
import { keyCacheNotes, profileDaemon, profileLoop } from './key-cache-explain.js';
import { categoryRows, type ProfileSummary } from './profile.js';
import type { BenchRow } from './results.js';
import { distribution, msSince, writeResult } from './results.js';

const seconds = Math.min(60, Math.max(1, Number(process.argv[2] ?? 5)));
const connections = 32;
/** The profile windows, s: long enough for a few thousand samples, short beside the measured ones. */
const profileSeconds = Math.min(seconds, 3);
const ctx = { projectId: 'bench' };
const dir = mkdtempSync(join(tmpdir(), 'portcullis-key-cache-'));
const keyManagerConfig = { key_manager: { backend: 'local', local: { path: join(dir, 'keystore.db'), kek_file: join(dir, 'kek') } } };
const { config } = validateConfig(keyManagerConfig, 'bench');

/**
 * Sequential awaited calls on one cached key for `seconds` (at most 50 M):
 * `get`, each returning a fresh copy that is zeroized at once, as callers
 * that keep a key do; or `lend`, withKey() lending the cache's own bytes to a
 * callback that reads one byte, the view detached when it returns.
 */
async function cachedGetsPerSecond(allocator: SecureAllocator, how: 'get' | 'lend', profiled: boolean): Promise<{ rate: number; profile?: ProfileSummary }> {
  const keys = await openCachedKeyManager(config, { allocator });
  try {
    const id = await keys.createKey(ctx, { algorithm: 'aes', length: 512 });
    const one = how === 'get' ? async () => (await keys.get(ctx, id)).zeroize() : () => keys.withKey(ctx, id, (key) => key.bytes()[0]);
    for (let i = 0; i < 10_000; i++) await one(); // warm the JIT
    const start = process.hrtime.bigint();
    let n = 0;
    while (n < 50_000_000) {
      for (let i = 0; i < 1000; i++) await one();
      n += 1000;
      if (msSince(start) >= seconds * 1000) break;
    }
    const rate = Math.round(n / (msSince(start) / 1000));
    return profiled ? { rate, profile: await profileLoop(one, profileSeconds * 1000) } : { rate };
  } finally {
    await keys.close();
  }
}

/** The real backend, with its get()s counted: single-flight is judged where the calls land. */
function counting(inner: KeyManager): KeyManager & { gets(): number } {
  let gets = 0;
  return {
    name: inner.name,
    capabilities: inner.capabilities,
    createKey: (c, spec) => inner.createKey(c, spec),
    createKeyPair: (c, spec) => inner.createKeyPair(c, spec),
    store: (c, obj) => inner.store(c, obj),
    get: (c, id, options) => ((gets += 1), inner.get(c, id, options)),
    delete: (c, id) => inner.delete(c, id),
    list: (c, options) => inner.list(c, options),
    health: () => inner.health(),
    close: () => inner.close(),
    gets: () => gets,
  };
}

async function concurrentMissesInProcess(): Promise<number> {
  const allocator = lockedAllocator();
  const backend = counting(await openKeyManager(config, { allocator }));
  const keys = cachingKeyManager(backend, config.cache, { allocator });
  try {
    const id = await keys.createKey(ctx, { algorithm: 'aes', length: 512 });
    const objects = await Promise.all(Array.from({ length: 1000 }, () => keys.get(ctx, id)));
    for (const o of objects) o.zeroize();
    return backend.gets();
  } finally {
    await keys.close();
  }
}

interface Cannon {
  rps: number;
  p50: number;
  p99: number;
  statuses: string;
  errors: number;
}

/**
 * autocannon over the unix socket for `seconds`. With `vary`, each request
 * gets its own path and body from it (volume i of 32), so requests for
 * different volumes do not queue on one volume's lock.
 */
async function cannon(daemon: Pick<BenchDaemon, 'socketPath'>, method: 'GET' | 'PUT', path: string, body?: unknown, vary?: (i: number) => { path: string; body: unknown }, duration = seconds): Promise<Cannon> {
  let n = 0;
  const json = { 'content-type': 'application/json' };
  const result = await autocannon({
    url: `http://portcullis${path}`,
    socketPath: daemon.socketPath,
    method,
    connections,
    duration,
    ...(body === undefined ? {} : { body: JSON.stringify(body), headers: json }),
    ...(vary === undefined
      ? {}
      : {
          requests: [
            {
              method,
              headers: json,
              setupRequest: (req: autocannon.Request) => {
                const next = vary(n++ % connections);
                return { ...req, path: next.path, body: JSON.stringify(next.body) };
              },
            },
          ],
        }),
  });
  const statuses = Object.entries(result.statusCodeStats ?? {}).map(([code, s]) => `${code}×${s.count}`).join(', ');
  return { rps: Math.round(result.requests.average), p50: result.latency.p50, p99: result.latency.p99, statuses, errors: result.errors + result.timeouts };
}

/** Key ids made in the daemon's keystore before it starts (the keystore is a single-writer SQLite file). */
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

/**
 * The floor any Node daemon stands on here: a bare node:http server on a unix
 * socket in its own process answering {} to everything, under the same load.
 */
async function bareNodeRps(): Promise<Cannon> {
  const socketPath = join(dir, 'bare.sock');
  const script = `require('node:http').createServer((q, s) => { q.resume(); q.on('end', () => { s.setHeader('content-type', 'application/json'); s.end('{}'); }); }).listen(process.argv[1], () => console.log('up'));`;
  const child = spawn(process.execPath, ['-e', script, socketPath], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    await new Promise<void>((resolve, reject) => {
      child.stdout?.once('data', () => resolve());
      child.once('exit', (code) => reject(new Error(`bare server exited ${String(code)}`)));
    });
    return await cannon({ socketPath }, 'GET', '/v1/health');
  } finally {
    child.kill('SIGTERM');
  }
}

/** The nop attach again on a daemon logging at warn: what its one info line per request costs. */
async function quietNopRps(id: string | undefined): Promise<Cannon> {
  const quiet = await startBenchDaemon({ ...keyManagerConfig, log: { level: 'warn' } });
  try {
    return await cannon(quiet, 'PUT', '/v1/volumes/bench-nop', { device: '/dev/portcullis-bench-nop', provider: 'nop', key: { id }, project_id: ctx.projectId });
  } finally {
    await quiet.stop();
  }
}

async function socketRows(): Promise<{ rows: BenchRow[]; storm: BenchRow; hot: string; figures: { bare: number; keyPath: number; keyPaths: number } }> {
  const bare = await bareNodeRps();
  const [hot, storm] = await makeKeys(2);
  if (hot === undefined) throw new Error('no key made');
  // 1,000 requests at once must be admitted to reach the cache together: the defaults admit 64 requests and 256 connections.
  const daemon = await startBenchDaemon({ ...keyManagerConfig, limits: { max_pending_requests: 1000, max_connections: 2000 } }, { dir });
  const attach = (provider: string, device: string, id: string | undefined) => ({ device, provider, key: { id }, project_id: ctx.projectId });
  try {
    const health = await cannon(daemon, 'GET', '/v1/health');
    const nop = await cannon(daemon, 'PUT', '/v1/volumes/bench-nop', attach('nop', '/dev/portcullis-bench-nop', hot));
    await daemon.call('PUT', '/v1/volumes/bench-key', attach('luks2', '/dev/portcullis-bench-absent', hot)); // the miss that caches it
    const keyPath = await cannon(daemon, 'PUT', '/v1/volumes/bench-key', attach('luks2', '/dev/portcullis-bench-absent', hot));
    const keyPaths = await cannon(daemon, 'PUT', '/v1/volumes/bench-key', attach('luks2', '/dev/portcullis-bench-absent', hot), (i) => ({ path: `/v1/volumes/bench-key-${i}`, body: attach('luks2', `/dev/portcullis-bench-absent-${i}`, hot) }));

    const before = (await daemon.call('GET', '/v1/cache')).body as { backend_fetches: number; coalesced: number };
    const answers = await Promise.all(Array.from({ length: 1000 }, (_, i) => daemon.call('PUT', `/v1/volumes/storm-${i}`, attach('luks2', `/dev/portcullis-bench-absent-${i}`, storm))));
    const after = (await daemon.call('GET', '/v1/cache')).body as { backend_fetches: number; coalesced: number };
    // One request at a time, nothing else running: the latency of a cached attach's key path alone.
    const single: number[] = [];
    for (let i = 0; i < 500; i++) {
      const start = process.hrtime.bigint();
      await daemon.call('PUT', '/v1/volumes/bench-key', attach('luks2', '/dev/portcullis-bench-absent', hot));
      single.push(Math.round(msSince(start) * 1000) / 1000);
    }
    const quietNop = await quietNopRps(hot);
    const codes = new Map<string, number>();
    for (const a of answers) {
      const code = (a.body as { error?: { code: string } }).error?.code ?? String(a.status);
      codes.set(code, (codes.get(code) ?? 0) + 1);
    }
    const where = `${connections} connections, ${seconds} s, client in the same 2 cores`;
    const describe = (c: Cannon) => `${where}; latency p50 ${c.p50} ms, p99 ${c.p99} ms; answers ${c.statuses}; errors ${c.errors}`;
    return {
      rows: [
        { group: 'over the socket', label: 'reference: bare node:http server answering {} (not portcullisd)', unit: 'req/s', value: bare.rps, note: `the ceiling for any Node.js daemon on this machine under the same client and load; ${describe(bare)}` },
        { group: 'over the socket', label: 'GET /v1/health', unit: 'req/s', value: health.rps, target: { op: '>=', value: 20_000 }, note: describe(health) },
        { group: 'over the socket', label: 'PUT attach, provider nop (no key, no device)', unit: 'req/s', value: nop.rps, target: { op: '>=', value: 20_000 }, note: describe(nop) },
        { group: 'over the socket', label: 'the same, daemon logging at warn (no info line per request)', unit: 'req/s', value: quietNop.rps, note: `what the one JSON log line per request costs; ${describe(quietNop)}` },
        { group: 'over the socket', label: 'PUT attach of one volume, key from the cache, device absent (key path of an idempotent re-attach)', unit: 'req/s', value: keyPath.rps, target: { op: '>=', value: 20_000 }, note: `${describe(keyPath)}; all requests name one volume, so they queue on its lock one at a time, as re-attaches of one volume do` },
        { group: 'over the socket', label: 'PUT attach, key from the cache, device absent, one request at a time: latency', unit: 'ms', ...distribution(single, 3), samples: single, note: '500 requests from a node:http client in the bench process, each after the last answer' },
        { group: 'over the socket', label: 'the same over 32 volumes (one per connection), one key', unit: 'req/s', value: keyPaths.rps, target: { op: '>=', value: 20_000 }, note: describe(keyPaths) },
        { group: 'over the socket', label: 'key path of one volume, as a share of the bare node:http ceiling in this run', unit: '%', value: share(keyPath.rps, bare.rps), target: { op: '>=', value: 20 }, note: `${keyPath.rps.toLocaleString('en-US')} of ${bare.rps.toLocaleString('en-US')} req/s` },
        { group: 'over the socket', label: 'key path over 32 volumes, as a share of the bare node:http ceiling in this run', unit: '%', value: share(keyPaths.rps, bare.rps), target: { op: '>=', value: 20 }, note: `${keyPaths.rps.toLocaleString('en-US')} of ${bare.rps.toLocaleString('en-US')} req/s` },
      ],
      storm: {
          group: 'single-flight',
          label: '1,000 concurrent attaches of one uncached key over the socket: backend fetches',
          unit: 'calls',
          value: after.backend_fetches - before.backend_fetches,
          target: { op: '<=', value: 1 },
          note: `the daemon's GET /v1/cache figures; ${after.coalesced - before.coalesced} coalesced; answers ${[...codes].map(([c, n]) => `${c}×${n}`).join(', ')}`,
      },
      hot,
      figures: { bare: bare.rps, keyPath: keyPath.rps, keyPaths: keyPaths.rps },
    };
  } finally {
    await daemon.stop();
  }
}

function share(part: number, whole: number): number {
  return Math.round((1000 * part) / Math.max(1, whole)) / 10;
}

// The keystore, its KEK and the logs go when the bench does.
process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
const locked = await cachedGetsPerSecond(lockedAllocator(), 'get', true);
const lent = await cachedGetsPerSecond(lockedAllocator(), 'lend', true);
const plain = await cachedGetsPerSecond(plainAllocator(), 'get', false);
const misses = await concurrentMissesInProcess();
const socket = await socketRows();
const keyPathBody = { device: '/dev/portcullis-bench-absent', provider: 'luks2', key: { id: socket.hot }, project_id: ctx.projectId };
const keyPathProfile = await profileDaemon(
  keyManagerConfig,
  join(dir, 'profiled'),
  (socketPath) => request(socketPath, 'PUT', '/v1/volumes/bench-key', keyPathBody), // the miss that caches it
  (socketPath) => cannon({ socketPath }, 'PUT', '/v1/volumes/bench-key', keyPathBody, undefined, profileSeconds),
);
if (locked.profile === undefined || lent.profile === undefined) throw new Error('the locked loops are always profiled');
const profiles = { get: locked.profile, lend: lent.profile, keyPath: keyPathProfile };
writeResult({
  name: 'key-cache',
  title: 'Key cache',
  parameters: { seconds, connections, profile_seconds: profileSeconds, backend: 'local keystore (SQLite, AES-256-GCM)' },
  rows: [
    { group: 'in-process', label: 'cached get(), locked memory', unit: 'gets/s', value: locked.rate, target: { op: '>=', value: 1_000_000 }, note: 'one awaited get() after another, each returning a fresh copy of the key (a slot of a locked slab) that is zeroized at once' },
    { group: 'in-process', label: 'cached withKey(), locked memory: the key lent, no copy (as the daemon runs)', unit: 'gets/s', value: lent.rate, target: { op: '>=', value: 1_000_000 }, note: 'one awaited withKey() after another; the callback reads the lent bytes, whose view is detached when it returns' },
    { group: 'in-process', label: 'cached get(), plain memory', unit: 'gets/s', value: plain.rate, target: { op: '>=', value: 1_000_000 } },
    ...categoryRows(profiles.lend, 'in-process', 'the withKey() loop'),
    ...categoryRows(profiles.get, 'in-process', 'the get() loop'),
    { group: 'single-flight', label: '1,000 concurrent get()s of one uncached key: backend get() calls', unit: 'calls', value: misses, target: { op: '<=', value: 1 }, note: 'counted by a wrapper around the real local backend, under the real cache' },
    ...socket.rows,
    ...(typeof keyPathProfile === 'string' ? [] : categoryRows(keyPathProfile, 'over the socket', 'the daemon under the one-volume key path', 4)),
    socket.storm,
  ],
  notes: keyCacheNotes({ locked: locked.rate, lent: lent.rate, ...socket.figures, profileSeconds, profiles }),
});
