/**
 * The portcullisd half of bench/vm-attach.ts, run INSIDE the test VM as root,
 * as on a compute host: the shipped portcullisd entry point and its
 * privileged helper both in the guest, on the guest's loop devices, timed in
 * the guest (process.hrtime) around each request on the daemon's socket. The
 * same process times a bare `cryptsetup luksOpen` (key on stdin) of the
 * headers portcullisd formatted and of headers formatted as os-brick formats
 * them (cryptsetup's default PBKDF), and counts with the kernel's process
 * accounting the processes the daemon spawned. Reads its job as JSON on stdin
 * ({"rounds": N, "storm": M}), prints one JSON object (GuestAttachResult) on
 * stdout; asserts nothing.
 * Run (in the guest): node dist/bench/guest-attach.js < job.json
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { keyslotKdf, type KeyslotKdf } from './guest/pbkdf.js';
import { attachBody, cryptsetup, freeDevices, hexOf, loopDevices, sh, startGuestDaemon, wipeKeys, type BenchKey, type GuestDaemon } from './guest/guest-daemon.js';
import { spawnedDuring } from './guest/process-acct.js';
import { msSince as since } from './results.js';

export interface ProviderTimes {
  first: number[];
  reattach: number[];
  detach: number[];
  /** `cryptsetup luksOpen` of the very headers portcullisd formatted, same key. */
  bareOurs: number[];
  /** `cryptsetup luksOpen` of a header formatted with cryptsetup's defaults, as os-brick formats. */
  bareDefault: number[];
  kdfOurs: KeyslotKdf;
  kdfDefault: KeyslotKdf;
  /** The daemon's own account of each cached re-attach (its answer's timings_ms): what the socket and HTTP add is the rest. */
  reattachServer: Array<Record<string, number>>;
  /** The daemon's log lines (its helper's operations, timestamped) during the last cached re-attach: where its time went. */
  reattachLog: string;
}

export interface GuestAttachResult {
  luks: ProviderTimes;
  luks2: ProviderTimes;
  /** Processes descending from portcullisd that exited during every LUKS request above, by name. */
  attachSpawned: { count: number; byName: Record<string, number> };
  storm: { volumes: number; daemonMs: number; rawMs: number; fetched: number; spawned: { count: number; byName: Record<string, number> } };
  versions: { node: string; cryptsetup: string; kernel: string };
}

const job = JSON.parse(readFileSync(0, 'utf8')) as { rounds: number; storm: number };
const { rounds, storm } = job;
const providers = ['luks', 'luks2'] as const;

/** A request that must answer 200; the answer's body. */
async function ok(g: GuestDaemon, method: string, path: string, body?: unknown): Promise<Record<string, unknown>> {
  const answer = await g.daemon.call(method, path, body);
  if (answer.status !== 200) throw new Error(`${method} ${path}: ${answer.status} ${answer.text}`);
  return answer.body as Record<string, unknown>;
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t = process.hrtime.bigint();
  await fn();
  return since(t);
}

/** A timed luksOpen of `dev` with the key's hex passphrase on stdin, then an untimed close. */
async function bareOpen(dev: string, key: BenchKey): Promise<number> {
  const pass = hexOf(key);
  try {
    return await timed(() => cryptsetup(['luksOpen', '--key-file=-', dev, 'pd-bare'], pass));
  } finally {
    pass.fill(0);
    await cryptsetup(['close', 'pd-bare']);
  }
}

/** portcullisd's first attach, detach, cached re-attach and detach on each of `rounds` fresh devices, with a bare open of each header after. */
async function daemonRounds(g: GuestDaemon, provider: (typeof providers)[number], keys: BenchKey[]): Promise<Omit<ProviderTimes, 'bareDefault' | 'kdfDefault'>> {
  const out = { first: [] as number[], reattach: [] as number[], detach: [] as number[], bareOurs: [] as number[], reattachServer: [] as Array<Record<string, number>>, reattachLog: '' };
  const devs = loopDevices(rounds, 32);
  try {
    for (const [i, device] of devs.entries()) {
      const key = keys[i] as BenchKey;
      const name = `pd-bench-${provider}-${i}`;
      const body = attachBody(device, provider, key);
      out.first.push(await timed(() => ok(g, 'PUT', `/v1/volumes/${name}`, body)));
      out.detach.push(await timed(() => ok(g, 'DELETE', `/v1/volumes/${name}`)));
      let answer: Record<string, unknown> = {};
      const logFrom = g.daemon.log().length;
      out.reattach.push(await timed(async () => (answer = await ok(g, 'PUT', `/v1/volumes/${name}`, body))));
      out.reattachServer.push(answer['timings_ms'] as Record<string, number>);
      out.reattachLog = g.daemon.log().slice(logFrom);
      out.detach.push(await timed(() => ok(g, 'DELETE', `/v1/volumes/${name}`)));
      out.bareOurs.push(await bareOpen(device, key));
    }
    return { ...out, kdfOurs: keyslotKdf(sh(`cryptsetup luksDump ${devs[0] ?? ''}`)) };
  } finally {
    freeDevices(devs);
  }
}

/** One header formatted as os-brick formats it (its argv, cryptsetup's default PBKDF), opened `rounds` times. */
async function defaultHeaderOpens(provider: (typeof providers)[number], key: BenchKey): Promise<{ bareDefault: number[]; kdfDefault: KeyslotKdf }> {
  const [dev = ''] = loopDevices(1, 32);
  try {
    const pass = hexOf(key);
    try {
      // os_brick/encryptors/luks.py's argv as bench/osbrick-encryptor.py drives it (no cipher or key size given): cryptsetup's defaults throughout, PBKDF included.
      await cryptsetup(['--batch-mode', 'luksFormat', '--type', provider === 'luks' ? 'luks1' : 'luks2', '--key-file=-', dev], pass);
    } finally {
      pass.fill(0);
    }
    const bareDefault: number[] = [];
    for (let i = 0; i < rounds; i += 1) bareDefault.push(await bareOpen(dev, key));
    return { bareDefault, kdfDefault: keyslotKdf(sh(`cryptsetup luksDump ${dev}`)) };
  } finally {
    freeDevices([dev]);
  }
}

/** `storm` plain volumes attached at once through the daemon and detached; the processes it spawned meanwhile. */
async function daemonStorm(g: GuestDaemon, keys: BenchKey[]): Promise<Omit<GuestAttachResult['storm'], 'rawMs'>> {
  const devs = loopDevices(storm, 1);
  try {
    let daemonMs = 0;
    let fetched = 0;
    const spawned = await spawnedDuring(g.pid, '/run/portcullis-bench-acct', async () => {
      const t = process.hrtime.bigint();
      const answers = await Promise.all(devs.map((device, i) => ok(g, 'PUT', `/v1/volumes/pd-storm-${i}`, { device, provider: 'plain', key: { id: (keys[i] as BenchKey).id }, project_id: 'bench' })));
      daemonMs = since(t);
      fetched = answers.filter((a) => a['key_source'] === 'backend').length;
      await Promise.all(devs.map((_, i) => ok(g, 'DELETE', `/v1/volumes/pd-storm-${i}`)));
    });
    // A detach that answered must have left its device free: say so loudly if one did not.
    const held = sh(`for d in ${devs.join(' ')}; do h=$(ls /sys/block/\${d#/dev/}/holders); [ -z "$h" ] || echo "$d held by $h"; done`);
    if (held !== '') throw new Error(`after the storm's detaches: ${held}`);
    return { volumes: storm, daemonMs, fetched, spawned };
  } finally {
    freeDevices(devs);
  }
}

/** A parallel shell loop of `storm` raw `cryptsetup create`, on fresh devices; every mapping checked after. */
async function rawStorm(key: BenchKey): Promise<number> {
  const devs = loopDevices(storm, 1);
  // The key read once from stdin into a shell variable; printf is a builtin, so it is in no argv.
  const input = Buffer.alloc(key.bytes.length * 2 + 1, '\n');
  const pass = hexOf(key);
  pass.copy(input);
  pass.fill(0);
  try {
    const script = `read k; i=0; for d in ${devs.join(' ')}; do i=$((i+1)); (printf %s "$k" | cryptsetup create --key-file=- pd-raw-$i $d) & done; wait`;
    const rawMs = await timed(
      () =>
        new Promise<void>((resolve, reject) => {
          const child = spawn('sh', ['-c', script], { stdio: ['pipe', 'ignore', 'inherit'] });
          child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`raw loop exited ${code}`))));
          child.stdin.end(input);
        }),
    );
    // `wait` reports no background failure: count what opened.
    const opened = Number(sh("dmsetup ls --target crypt | grep -c '^pd-raw-' || true"));
    if (opened !== storm) throw new Error(`the raw loop opened ${opened} of ${storm} mappings`);
    return rawMs;
  } finally {
    input.fill(0);
    sh(`for m in $(dmsetup ls --target crypt | cut -f1 | grep '^pd-raw-'); do cryptsetup close $m; done`);
    freeDevices(devs);
  }
}

const g = await startGuestDaemon(2 * rounds + storm + 2);
try {
  // Once per daemon: the perf-flag probe, paid before anything is measured.
  const [warm = ''] = loopDevices(1, 1);
  await ok(g, 'PUT', '/v1/volumes/pd-warm', { device: warm, provider: 'plain', key: { id: (g.keys[0] as BenchKey).id }, project_id: 'bench' });
  await ok(g, 'DELETE', '/v1/volumes/pd-warm');
  freeDevices([warm]);

  const perProvider: Partial<Record<(typeof providers)[number], ProviderTimes>> = {};
  const attachSpawned = await spawnedDuring(g.pid, '/run/portcullis-bench-acct', async () => {
    for (const [p, provider] of providers.entries()) {
      const keys = g.keys.slice(1 + p * rounds, 1 + (p + 1) * rounds);
      const ours = await daemonRounds(g, provider, keys);
      perProvider[provider] = { ...ours, ...(await defaultHeaderOpens(provider, keys[0] as BenchKey)) };
    }
  });
  const stormKeys = g.keys.slice(1 + 2 * rounds);
  const stormResult = { ...(await daemonStorm(g, stormKeys)), rawMs: await rawStorm(stormKeys[storm] as BenchKey) };
  const result: GuestAttachResult = {
    luks: perProvider.luks as ProviderTimes,
    luks2: perProvider.luks2 as ProviderTimes,
    attachSpawned,
    storm: stormResult,
    versions: { node: process.version, cryptsetup: sh('cryptsetup --version'), kernel: sh('uname -r') },
  };
  process.stdout.write(`${JSON.stringify(result)}\n`);
} catch (err) {
  process.stderr.write(`guest-attach failed: ${(err as Error).stack ?? String(err)}\nportcullisd log:\n${g.daemon.log().slice(-8000)}\n`);
  process.exitCode = 1;
} finally {
  await g.daemon.stop();
  wipeKeys(g.keys);
}
