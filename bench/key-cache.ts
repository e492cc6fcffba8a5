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
 * own cache figures. Writes bench/results/key-cache.json; asserts nothing.
 * Run: make build && nice -n 10 node dist/bench/key-cache.js [SECONDS]
 */
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import autocannon from 'autocannon';
import { validateConfig } from '../src/config/load.js';
import { cachingKeyManager } from '../src/keyclient/cache.js';
import type { KeyManager } from '../src/keyclient/key-manager.js';
import { openCachedKeyManager, openKeyManager } from '../src/keyclient/open.js';
import { plainAllocator, type SecureAllocator } from '../src/keyclient/secure-memory.js';
import { lockedAllocator } from '../native/secure-allocator.js';
import { startBenchDaemon, type BenchDaemon } from './daemon.js';
import type { BenchRow } from './results.js';
import { msSince, writeResult } from './results.js';

const seconds = Math.min(60, Math.max(1, Number(process.argv[2] ?? 5)));
const connections = 32;
const ctx = { projectId: 'bench' };
const dir = mkdtempSync(join(tmpdir(), 'portcullis-key-cache-'));
const keyManagerConfig = { key_manager: { backend: 'local', local: { path: join(dir, 'keystore.db'), kek_file: join(dir, 'kek') } } };
const { config } = validateConfig(keyManagerConfig, 'bench');

/** Sequential awaited get()s of one cached key for `seconds` (at most 50 M), each copy zeroized as the daemon does. */
async function cachedGetsPerSecond(allocator: SecureAllocator): Promise<number> {
  const keys = await openCachedKeyManager(config, { allocator });
  try {
    const id = await keys.createKey(ctx, { algorithm: 'aes', length: 512 });
    for (let i = 0; i < 10_000; i++) (await keys.get(ctx, id)).zeroize(); // warm the JIT
    const start = process.hrtime.bigint();
    let n = 0;
    while (n < 50_000_000) {
      for (let i = 0; i < 1000; i++) (await keys.get(ctx, id)).zeroize();
      n += 1000;
      if (msSince(start) >= seconds * 1000) break;
    }
    return Math.round(n / (msSince(start) / 1000));
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

async function cannon(daemon: Pick<BenchDaemon, 'socketPath'>, method: 'GET' | 'PUT', path: string, body?: unknown): Promise<Cannon> {
  const result = await autocannon({
    url: `http://portcullis${path}`,
    socketPath: daemon.socketPath,
    method,
    connections,
    duration: seconds,
    ...(body === undefined ? {} : { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } }),
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

async function socketRows(): Promise<{ rows: BenchRow[]; notes: string[] }> {
  const bare = await bareNodeRps();
  const [hot, storm] = await makeKeys(2);
  // 1,000 requests at once must be admitted to reach the cache together (the default admits 64).
  const daemon = await startBenchDaemon({ ...keyManagerConfig, limits: { max_pending_requests: 1000 } }, { dir });
  const attach = (provider: string, device: string, id: string | undefined) => ({ device, provider, key: { id }, project_id: ctx.projectId });
  try {
    const health = await cannon(daemon, 'GET', '/v1/health');
    const nop = await cannon(daemon, 'PUT', '/v1/volumes/bench-nop', attach('nop', '/dev/portcullis-bench-nop', hot));
    await daemon.call('PUT', '/v1/volumes/bench-key', attach('luks2', '/dev/portcullis-bench-absent', hot)); // the miss that caches it
    const keyPath = await cannon(daemon, 'PUT', '/v1/volumes/bench-key', attach('luks2', '/dev/portcullis-bench-absent', hot));

    const before = (await daemon.call('GET', '/v1/cache')).body as { backend_fetches: number; coalesced: number };
    const answers = await Promise.all(Array.from({ length: 1000 }, (_, i) => daemon.call('PUT', `/v1/volumes/storm-${i}`, attach('luks2', `/dev/portcullis-bench-absent-${i}`, storm))));
    const after = (await daemon.call('GET', '/v1/cache')).body as { backend_fetches: number; coalesced: number };
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
        { group: 'over the socket', label: 'PUT attach, key from the cache, device absent (key path of an idempotent re-attach)', unit: 'req/s', value: keyPath.rps, target: { op: '>=', value: 20_000 }, note: describe(keyPath) },
        {
          group: 'single-flight',
          label: '1,000 concurrent attaches of one uncached key over the socket: backend fetches',
          unit: 'calls',
          value: after.backend_fetches - before.backend_fetches,
          target: { op: '<=', value: 1 },
          note: `the daemon's GET /v1/cache figures; ${after.coalesced - before.coalesced} coalesced; answers ${[...codes].map(([c, n]) => `${c}×${n}`).join(', ')}`,
        },
      ],
      notes: [
        'This host has no device-mapper, so no volume can be attached here. The socket figures use three requests that need none: health, an attach with provider nop (os-brick\'s NoOpEncryptor: answered after validation and the per-name lock, before any key), and a LUKS attach whose key comes from the cache and whose device does not exist (the daemon fetches the key before it looks at the device, so this runs validation, peer credentials, admission, the locks, the cache hit with its locked copy, the audit line and the log line, then answers E_DEVICE_NOT_FOUND).',
        'An idempotent re-attach of a really attached LUKS volume adds to that last request the device identity (one in-process stat), the mapping status from sysfs and the ownership record: no process is spawned. bench/vm-attach.ts measures it on a real kernel.',
        'GET /v1/health on this host re-runs its host checks (cryptsetup --version, dmsetup targets) on every call, because they fail without device-mapper and a failed check is never remembered; on a host with dm-crypt they are cached for 30 s.',
      ],
    };
  } finally {
    await daemon.stop();
  }
}

const locked = await cachedGetsPerSecond(lockedAllocator());
const plain = await cachedGetsPerSecond(plainAllocator());
const misses = await concurrentMissesInProcess();
const socket = await socketRows();
writeResult({
  name: 'key-cache',
  title: 'Key cache',
  parameters: { seconds, connections, backend: 'local keystore (SQLite, AES-256-GCM)' },
  rows: [
    { group: 'in-process', label: 'cached get(), locked memory (as the daemon runs)', unit: 'gets/s', value: locked, target: { op: '>=', value: 1_000_000 }, note: 'one awaited get() after another, each returning a fresh copy of the key that is zeroized at once' },
    { group: 'in-process', label: 'cached get(), plain memory', unit: 'gets/s', value: plain, target: { op: '>=', value: 1_000_000 } },
    { group: 'single-flight', label: '1,000 concurrent get()s of one uncached key: backend get() calls', unit: 'calls', value: misses, target: { op: '<=', value: 1 }, note: 'counted by a wrapper around the real local backend, under the real cache' },
    ...socket.rows,
  ],
  notes: socket.notes,
});
