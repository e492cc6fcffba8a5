/**
 * Attach latency on a real kernel (the test VM, or this host in direct
 * mode), in one run on the same loop devices: os-brick's own encryptors
 * driven as nova drives them vs portcullisd; the daemon's overhead over a
 * bare `cryptsetup luksOpen`; a 64-volume attach storm vs a parallel shell
 * loop of raw opens. Prints tables, writes bench/results/vm-attach.json;
 * asserts nothing. Never part of `make test`.
 * Run: make build && node dist/bench/vm-attach.js   (BENCH_ROUNDS, default 20)
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { commandName, countingRunner } from '../test/helpers/counting-runner.js';
import { createKeyIn, daemonKernel, localKeystoreDaemon, ok } from '../test/daemon/vm-setup.js';

const rounds = Number(process.env['BENCH_ROUNDS'] ?? 20);
const STORM = 64;
/** One long-lived os-brick process per provider, as nova is (its imports alone take over a minute under TCG). */
const BATCH = Number(process.env['BENCH_BATCH'] ?? rounds);
const osBrick = fileURLToPath(new URL('../../bench/osbrick-encryptor.py', import.meta.url));
const resultsDir = fileURLToPath(new URL('../../bench/results/', import.meta.url));

interface Row {
  label: string;
  unit: string;
  p50?: number;
  p95?: number;
  value?: number;
  target?: string;
  samples?: number[];
}

const quantile = (xs: number[], q: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * q))] ?? NaN;
const since = (start: bigint) => Number(process.hrtime.bigint() - start) / 1e6;
const dist = (label: string, samples: number[], target?: string): Row => ({ label, unit: 'ms', p50: quantile(samples, 0.5), p95: quantile(samples, 0.95), samples, ...(target === undefined ? {} : { target }) });
const rows: Row[] = [];
const notes: string[] = [];

const kernel = await daemonKernel();
const counter = countingRunner(kernel.runner);
const run = (argv: string[], stdin?: Buffer) => kernel.runner.run(argv, { ...(stdin === undefined ? {} : { stdin }), timeoutMs: 3_600_000 });
const sh = kernel.sh;
/** Fresh loop devices, freed after use: tmpfs in a 2 GiB guest cannot hold every LUKS2 header of the run at once. */
async function withDevices<T>(count: number, mib: number, fn: (devs: string[]) => Promise<T>): Promise<T> {
  const devs = await kernel.loopDevices(count, mib);
  try {
    return await fn(devs);
  } finally {
    await sh(`for d in ${devs.join(' ')}; do f=$(losetup --noheadings -O BACK-FILE $d); losetup -d $d; rm -f "$f"; done`);
  }
}

try {
  const daemon = await localKeystoreDaemon(kernel, counter);
  const versions = await sh(`cryptsetup --version; dpkg-query -W -f '\${Version}' python3-os-brick; echo; uname -r`);
  console.log(`kernel ${kernel.runner.where} (${kernel.runner.mode}); ${rounds} rounds\n${versions}`);
  // Once per daemon: the perf-flag probe. Paid before anything is measured.
  await withDevices(1, 1, async ([warm]) => {
    ok(await daemon.call('PUT', '/v1/volumes/pd-warm', { device: warm, provider: 'plain', key: { id: createKeyIn(daemon, 'bench') }, project_id: 'bench' }));
    ok(await daemon.call('DELETE', '/v1/volumes/pd-warm'));
  });

  // 1. os-brick side by side: first attach (format + open) and a re-attach, LUKS1 and LUKS2.
  for (const provider of ['luks', 'luks2'] as const) {
    const brick = { first: [] as number[], reattach: [] as number[] };
    const ours = { first: [] as number[], reattach: [] as number[], detach: [] as number[] };
    for (let done = 0; done < rounds; done += BATCH) {
      const n = Math.min(BATCH, rounds - done);
      await withDevices(n, 32, async (devs) => {
        const job = JSON.stringify({ provider, devices: devs, key_hex: randomBytes(32).toString('hex'), link_dir: '/dev/disk/portcullis-bench' });
        const result = await run(['/usr/bin/python3', osBrick], Buffer.from(job));
        if (result.code !== 0) throw new Error(`os-brick: ${result.stderr.toString()}`);
        const times = JSON.parse(result.stdout.toString()) as { first: number[]; reattach: number[] };
        brick.first.push(...times.first);
        brick.reattach.push(...times.reattach);
      });
      await withDevices(n, 32, async (devs) => {
        for (const [i, device] of devs.entries()) {
          const name = `pd-bench-${provider}-${done + i}`;
          const body = { device, provider, key: { id: createKeyIn(daemon, 'bench') }, project_id: 'bench', format: 'if-blank' };
          for (const kind of ['first', 'reattach'] as const) {
            let t = process.hrtime.bigint();
            ok(await daemon.call('PUT', `/v1/volumes/${name}`, body));
            ours[kind].push(since(t));
            t = process.hrtime.bigint();
            ok(await daemon.call('DELETE', `/v1/volumes/${name}`));
            ours.detach.push(since(t));
          }
        }
      });
    }
    const x = (a: number[], b: number[]) => quantile(a, 0.5) / quantile(b, 0.5);
    rows.push(
      dist(`os-brick ${provider} first attach (format + open)`, brick.first),
      dist(`portcullisd ${provider} first attach (format + open)`, ours.first, `≥ 10× faster than os-brick (here ${x(brick.first, ours.first).toFixed(1)}×)`),
      dist(`os-brick ${provider} re-attach`, brick.reattach),
      dist(`portcullisd ${provider} re-attach, key cached`, ours.reattach, `≥ 5× faster than os-brick in the VM (here ${x(brick.reattach, ours.reattach).toFixed(1)}×)`),
      dist(`portcullisd ${provider} detach`, ours.detach),
    );
  }

  // 2. Daemon overhead: a cached re-attach through the socket vs a bare luksOpen of the same kind of header.
  await withDevices(2, 32, async ([raw, mine]) => {
    const key = randomBytes(64);
    const hex = Buffer.from(key.toString('hex'));
    await run(['cryptsetup', '--batch-mode', 'luksFormat', '--type', 'luks2', '--key-file=-', '--pbkdf', 'pbkdf2', '--pbkdf-force-iterations', '1000', raw ?? ''], hex);
    const body = { device: mine, provider: 'luks2', key: { id: createKeyIn(daemon, 'bench') }, project_id: 'bench', format: 'if-blank' };
    ok(await daemon.call('PUT', '/v1/volumes/pd-overhead', body));
    ok(await daemon.call('DELETE', '/v1/volumes/pd-overhead'));
    const bare: number[] = [];
    const daemonTimes: number[] = [];
    for (let i = 0; i < rounds; i++) {
      let t = process.hrtime.bigint();
      const opened = await run(['cryptsetup', 'luksOpen', '--key-file=-', raw ?? '', 'pd-raw'], hex);
      bare.push(since(t));
      if (opened.code !== 0) throw new Error(opened.stderr.toString());
      await run(['cryptsetup', 'close', 'pd-raw']);
      t = process.hrtime.bigint();
      ok(await daemon.call('PUT', '/v1/volumes/pd-overhead', body));
      daemonTimes.push(since(t));
      ok(await daemon.call('DELETE', '/v1/volumes/pd-overhead'));
    }
    const overhead = (quantile(daemonTimes, 0.5) / quantile(bare, 0.5) - 1) * 100;
    rows.push(dist('bare cryptsetup luksOpen (luks2, same PBKDF)', bare), dist('portcullisd attach, key cached (luks2)', daemonTimes, `≤ 10 % over bare luksOpen (here ${overhead.toFixed(1)} %)`));
  });

  // 3. Storm: 64 plain volumes at once through the daemon vs a parallel shell loop of raw opens.
  await withDevices(STORM, 1, async (devs) => {
    const keys = devs.map(() => createKeyIn(daemon, 'bench'));
    const fromCommands = counter.commands.length;
    let t = process.hrtime.bigint();
    const answers = await Promise.all(devs.map((device, i) => daemon.call('PUT', `/v1/volumes/pd-storm-${i}`, { device, provider: 'plain', key: { id: keys[i] }, project_id: 'bench' })));
    const stormMs = since(t);
    const spawned = counter.commands.slice(fromCommands).map(commandName);
    const fetched = answers.filter((a) => (a.body as { key_source?: string }).key_source === 'backend').length;
    if (answers.some((a) => a.status !== 200)) throw new Error(`storm: ${answers.find((a) => a.status !== 200)?.text}`);
    await Promise.all(devs.map((_, i) => daemon.call('DELETE', `/v1/volumes/pd-storm-${i}`).then(ok)));
    // The key read once from stdin into a shell variable; printf is a builtin, so it is in no argv.
    t = process.hrtime.bigint();
    const loop = await run(['sh', '-c', `read k; i=0; for d in ${devs.join(' ')}; do i=$((i+1)); (printf %s "$k" | cryptsetup create --key-file=- pd-raw-$i $d) & done; wait`], Buffer.from(`${randomBytes(32).toString('hex')}\n`));
    const rawMs = since(t);
    if (loop.code !== 0) throw new Error(loop.stderr.toString());
    await sh(`for i in $(seq 1 ${STORM}); do cryptsetup close pd-raw-$i; done`);
    rows.push(
      { label: `raw parallel shell loop, ${STORM} plain opens`, unit: 'ms', value: rawMs },
      { label: `portcullisd storm, ${STORM} plain attaches at once`, unit: 'ms', value: stormMs, target: `≤ 1.2× the raw loop (here ${(stormMs / rawMs).toFixed(2)}×)` },
      { label: 'portcullisd storm: processes spawned', unit: 'count', value: spawned.length, target: `${STORM} blkid -p + ${STORM} cryptsetup create` },
      { label: 'portcullisd storm: backend fetches', unit: 'count', value: fetched, target: `${STORM} (one per distinct key)` },
    );
    notes.push(`storm processes by name: ${JSON.stringify(Object.fromEntries([...new Set(spawned)].map((n) => [n, spawned.filter((s) => s === n).length])))}`);
  });

  notes.push(
    'os-brick times are taken inside its Python process, around attach_volume()/detach_volume(); portcullisd times at the client, around the socket request, so they include every channel round trip to the guest agent.',
    'Under TCG every process costs 100–500 ms, which is why the process count per operation (test/daemon/process-count.vm.test.ts) decides the figures.',
  );
  const result = { name: 'vm-attach', kernel: kernel.runner.where, mode: kernel.runner.mode, versions: versions.split('\n'), rounds, date: new Date().toISOString(), rows, notes };
  mkdirSync(resultsDir, { recursive: true });
  writeFileSync(`${resultsDir}vm-attach.json`, `${JSON.stringify(result, null, 2)}\n`);
  console.log(['label'.padEnd(58), 'p50/value'.padStart(10), 'p95'.padStart(9), '  target'].join(''));
  for (const r of rows) console.log(`${r.label.padEnd(58)}${(r.p50 ?? r.value ?? NaN).toFixed(1).padStart(10)}${(r.p95 === undefined ? '' : r.p95.toFixed(1)).padStart(9)}  ${r.target ?? ''}`);
  for (const n of notes) console.log(`note: ${n}`);
} finally {
  await kernel.cleanup();
}
