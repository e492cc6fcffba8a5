/**
 * A boot storm across a fleet: N portcullisd processes (simulated hosts,
 * each its own config, socket and cache) against one real Barbican behind a
 * real Keystone (Debian's packages, test/fixtures), each fetching M volume
 * keys at once as a host does when its guests come back after a reboot.
 * Counting proxies on 127.0.0.1 in front of Barbican and Keystone count
 * every request the daemons make. Cold: daemons just started for the first
 * time (empty caches, no token, no metadata file). Warm: the same daemons
 * again. Restarted: each host's daemon stopped and started again on the same
 * state directory, as a reboot does: the cache is gone (it lives in locked
 * memory only), the secrets' metadata (never their bytes) is in
 * key_manager.barbican.metadata_file.
 *
 * No volume can be attached on this host (no device-mapper); an attach
 * fetches its key before it looks at the device, so each attach names an
 * absent device and drives the daemon's whole key path (API, cache,
 * Keystone token and catalog, Barbican metadata and payload) before it
 * answers E_DEVICE_NOT_FOUND. Writes bench/results/fleet.json; asserts nothing.
 * Run: make build && nice -n 10 node dist/bench/fleet.js [N×M ...]   (default 1x64 4x64 16x16 16x64)
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { barbicanBackend } from '../src/keyclient/backends/barbican/backend.js';
import { plainAllocator } from '../src/util/secure-memory.js';
import { startBarbican } from '../test/fixtures/barbican-server.js';
import { startKeystone } from '../test/fixtures/keystone-server.js';
import { startInterposer } from '../test/fixtures/servers/fakes.js';
import { startBenchDaemon, type BenchDaemon } from './daemon.js';
import { distribution, msSince, type BenchRow, writeResult } from './results.js';

const grid = (process.argv.length > 2 ? process.argv.slice(2) : ['1x64', '4x64', '16x16', '16x64']).map((g) => {
  const [n, m] = g.split('x').map(Number);
  if (!Number.isInteger(n) || !Number.isInteger(m) || n === undefined || m === undefined || n < 1 || n > 32 || m < 1 || m > 64) throw new Error(`bad N×M ${g}: want NxM, N ≤ 32, M ≤ 64`);
  return { n, m };
});
const maxKeys = Math.max(...grid.map((g) => g.n * g.m));

const keystone = await startKeystone();
const barbican = await startBarbican({ pipeline: 'keystone', keystone });
const barbicanTap = await startInterposer(barbican.url);
const keystoneTap = await startInterposer(keystone.url);
const stops = [() => keystoneTap.stop(), () => barbicanTap.stop(), () => barbican.stop(), () => keystone.stop()];
// The daemons find Barbican in the catalog, which names the tap.
await keystone.registerKeyManager(barbicanTap.url);
const user = keystone.users.portcullis;
const project = keystone.projects.a.id;

interface Storm {
  ms: number;
  samples: number[];
  barbican: number;
  keystone: number;
  failures: string[];
}

/** Requests the taps saw since `mark`. */
const mark = () => ({ b: barbicanTap.exchanges.length, k: keystoneTap.exchanges.length });
const since = (m: { b: number; k: number }) => ({ barbican: barbicanTap.exchanges.length - m.b, keystone: keystoneTap.exchanges.length - m.k });

async function makeKeys(count: number): Promise<string[]> {
  // Straight to Barbican (not through the taps): making keys is not what is counted.
  const direct = await barbicanBackend.create(barbicanBackend.optionsSchema.parse({ endpoint: barbican.url, auth: { type: 'password', auth_url: keystone.authUrl, username: user.name, password: user.password } }), { allocator: plainAllocator() });
  try {
    const ids: string[] = [];
    while (ids.length < count) {
      const batch = 1; // Barbican on SQLite fails concurrent orders (500)
      ids.push(...(await Promise.all(Array.from({ length: batch }, () => direct.createKey({ projectId: project }, { algorithm: 'aes', length: 512 })))));
    }
    return ids;
  } finally {
    await direct.close();
  }
}

/** One daemon per host directory (fresh ones when `dirs` is absent), each with the shipped advice: the metadata file in its state directory. */
async function startHosts(n: number, dirs?: readonly string[]): Promise<BenchDaemon[]> {
  return Promise.all(
    Array.from({ length: n }, async (_, i) => {
      const dir = dirs?.[i] ?? mkdtempSync(join(tmpdir(), 'portcullis-fleet-'));
      // The password in a 0600 file the config names: never in argv, environment or the config text.
      const passwordFile = join(dir, 'keystone-password');
      writeFileSync(passwordFile, user.password, { mode: 0o600 });
      const config = {
        key_manager: {
          backend: 'barbican',
          barbican: {
            region_name: 'RegionOne', timeout: 60, metadata_file: join(dir, 'barbican-metadata.json'),
            auth: { type: 'password', auth_url: `${keystoneTap.url}/v3`, username: user.name, password_file: passwordFile },
          },
        },
      };
      return startBenchDaemon(config, { dir, readyTimeoutMs: 120_000 });
    }),
  );
}

/** Every host attaches its M volumes at once; resolves when the last answer is in. */
async function storm(hosts: BenchDaemon[], keys: readonly string[], m: number): Promise<Storm> {
  const before = mark();
  const samples: number[] = [];
  const failures: string[] = [];
  const t0 = process.hrtime.bigint();
  await Promise.all(
    hosts.flatMap((host, h) =>
      Array.from({ length: m }, async (_, v) => {
        const start = process.hrtime.bigint();
        const answer = await host.call('PUT', `/v1/volumes/vol-${v}`, { device: `/dev/portcullis-bench-absent-${v}`, provider: 'luks2', key: { id: keys[h * m + v] }, project_id: project });
        samples.push(Math.round(msSince(start) * 100) / 100);
        const code = (answer.body as { error?: { code?: string } }).error?.code;
        if (code !== 'E_DEVICE_NOT_FOUND') failures.push(`${answer.status} ${code ?? answer.text.slice(0, 200)}`);
      }),
    ),
  );
  return { ms: msSince(t0), samples, failures, ...since(before) };
}

const rows: BenchRow[] = [];
const round2 = (x: number): number => Math.round(x * 100) / 100;
const notes: string[] = [];
const parameters: Record<string, string> = {};
let perKey = Number.NaN;
let perKeyRestarted = Number.NaN;
let barbicanRate = Number.NaN;
let perHostKeystone = Number.NaN;
let largest = { n: 0, m: 0 };
try {
  const t = process.hrtime.bigint();
  const keys = await makeKeys(maxKeys);
  parameters['keys_made'] = `${maxKeys} AES-512 keys in ${Math.round(msSince(t) / 1000)} s (orders, one at a time)`;
  for (const { n, m } of grid) {
    const group = `${n} hosts × ${m} volumes`;
    const atStart = mark();
    const t1 = process.hrtime.bigint();
    let hosts = await startHosts(n);
    const startMs = msSince(t1);
    const started = since(atStart);
    try {
      const cold = await storm(hosts, keys, m);
      const warm = await storm(hosts, keys, m);
      // A reboot: every daemon stopped, then started again on its own state directory.
      const dirs = hosts.map((h) => h.dir);
      await Promise.all(hosts.map((h) => h.stop()));
      const atRestart = mark();
      hosts = await startHosts(n, dirs);
      const restartedAt = since(atRestart);
      const restarted = await storm(hosts, keys, m);
      for (const [kind, s] of [['cold', cold], ['warm', warm], ['restarted', restarted]] as const) {
        if (s.failures.length > 0) notes.push(`${group}, ${kind}: ${s.failures.length} attaches did not reach the device check: ${[...new Set(s.failures)].slice(0, 3).join('; ')}`);
      }
      rows.push(
        { group, label: 'cold: Barbican requests (daemon start + storm)', unit: 'requests', value: started.barbican + cold.barbican, note: `${started.barbican} at start (health), ${cold.barbican} in the storm: ${(cold.barbican / (n * m)).toFixed(2)} per key` },
        { group, label: 'cold: Keystone requests (daemon start + storm)', unit: 'requests', value: started.keystone + cold.keystone, note: `${started.keystone} at start, ${cold.keystone} in the storm` },
        { group, label: 'cold: time to all keys fetched', unit: 'ms', value: Math.round(cold.ms), note: `daemons started in ${Math.round(startMs)} ms before (not included)` },
        { group, label: 'cold: attach (key path) latency', unit: 'ms', ...distribution(cold.samples), samples: cold.samples },
        { group, label: 'cold, first-ever fetch: Barbican requests per key', unit: 'requests', value: round2(cold.barbican / (n * m)), target: { op: '<=', value: 2 }, note: 'metadata, then payload: nothing is known of a secret the first time' },
        { group, label: 'warm: Barbican requests', unit: 'requests', value: warm.barbican, target: { op: '<=', value: 0 } },
        { group, label: 'warm: time to all keys fetched', unit: 'ms', value: Math.round(warm.ms) },
        { group, label: 'warm: attach (key path) latency', unit: 'ms', ...distribution(warm.samples), samples: warm.samples },
        { group, label: 'restarted (a reboot): Barbican requests per key', unit: 'requests', value: round2(restarted.barbican / (n * m)), target: { op: '<=', value: 1 }, note: `${restartedAt.barbican} at start (health), ${restarted.barbican} in the storm; the metadata from key_manager.barbican.metadata_file, the payload from Barbican` },
        { group, label: 'restarted: Keystone requests (daemon start + storm)', unit: 'requests', value: restartedAt.keystone + restarted.keystone },
        { group, label: 'restarted: time to all keys fetched', unit: 'ms', value: Math.round(restarted.ms) },
      );
      if (n * m >= largest.n * largest.m) {
        largest = { n, m };
        perKey = cold.barbican / (n * m);
        perKeyRestarted = restarted.barbican / (n * m);
        barbicanRate = cold.barbican / (cold.ms / 1000);
        perHostKeystone = (started.keystone + cold.keystone) / n;
      }
    } finally {
      await Promise.all(hosts.map((h) => h.stop()));
      for (const h of hosts) rmSync(h.dir, { recursive: true, force: true });
    }
  }
  notes.push(`What the daemons asked, over the whole run. Each daemon asks Keystone twice: GET /v3 at start (its health check) and one token at its first attach, however many attaches start at once. Keystone: ${tally(keystoneTap.exchanges)}. Barbican: ${tally(barbicanTap.exchanges)}.`);
} finally {
  for (const stop of stops) await stop().catch(() => undefined);
}

/** "GET /v1/secrets/{id} ×2048, ..." with ids folded, so the kinds of request can be read off. */
function tally(exchanges: ReadonlyArray<{ method: string; path: string }>): string {
  const counts = new Map<string, number>();
  for (const e of exchanges) {
    const path = (e.path.split('?')[0] ?? '').replace(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g, '{id}');
    counts.set(`${e.method} ${path}`, (counts.get(`${e.method} ${path}`) ?? 0) + 1);
  }
  return [...counts].map(([k, n]) => `${k} ×${n}`).join(', ') || 'nothing';
}

const hosts = 1000;
const volumes = largest.m;
const predicted = hosts * volumes * perKeyRestarted;
const predictedFirst = hosts * volumes * perKey;
notes.push(
  'Devices cannot be attached on this host, and the API has no endpoint that only fetches or warms a key. So each simulated host drives its real portcullisd through the attach request itself, whose order of validation makes it one: an attach fetches the key (cache, Keystone token and catalog, Barbican) before it looks at the device, and then answers E_DEVICE_NOT_FOUND. Everything up to the device is the production path; the LUKS open that would follow is measured by bench/vm-attach.ts.',
  'All hosts, Barbican (one process, 4 threads, SQLite, simple_crypto) and Keystone share this 2-core machine, so the times are an upper bound on what one Barbican node does; the request counts are exact and do not depend on the machine.',
  `For 1,000 hosts of ${volumes} volumes each rebooting at once: ${Math.round(predicted).toLocaleString('en-US')} Barbican requests (${perKeyRestarted.toFixed(2)} per key, as measured for restarted daemons: the payload only, the metadata read from key_manager.barbican.metadata_file) and about ${Math.round(hosts * perHostKeystone).toLocaleString('en-US')} Keystone requests (${perHostKeystone.toFixed(2)} per host). At the ${Math.round(barbicanRate)} requests/s this Barbican served in the ${largest.n}×${largest.m} cold storm, that is ${Math.round(predicted / barbicanRate / 60)} minutes for one such Barbican; it scales with Barbican API workers. The same fleet's first-ever storm, with nothing known yet, asks ${Math.round(predictedFirst).toLocaleString('en-US')} (${perKey.toFixed(2)} per key: metadata, then payload, as Castellan does). With warm caches (daemons that stayed up: agent restarts, guest reboots) the storm costs Barbican nothing. Key bytes are never written to disk: a reboot empties the cache (locked memory only), so the payload is always asked for again.`,
);
writeResult({ name: 'fleet', title: 'Boot storm across a fleet', parameters: { ...parameters, grid: grid.map((g) => `${g.n}x${g.m}`).join(' ') }, rows, notes });
