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
import { fileURLToPath } from 'node:url';
import { distribution, machineInfo, msSince as since, writeResult, type BenchRow } from './results.js';
import { commandName, countingRunner } from '../test/helpers/counting-runner.js';
import { createKeyIn, daemonKernel, localKeystoreDaemon, ok } from '../test/daemon/vm-setup.js';

const rounds = Number(process.env['BENCH_ROUNDS'] ?? 20);
const STORM = 64;
/** One long-lived os-brick process per provider, as nova is (its imports alone take over a minute under TCG). */
const BATCH = Number(process.env['BENCH_BATCH'] ?? rounds);
const osBrick = fileURLToPath(new URL('../../bench/osbrick-encryptor.py', import.meta.url));

/** Why a figure can miss its target in the VM (the recorded run missed two); kept with the bench so a rerun says it too. */
const MISSES = [
  'with the privileged helper no attach spawns a process; what is left of the daemon\'s time over a bare luksOpen here is its round trips to the guest (helper operations and sysfs questions, ~5 ms each under TCG through the harness channel, microseconds on a host), since node runs on the host and only the devices are in the guest.',
].join(' ');
const dist = (group: string, label: string, samples: number[]): BenchRow => ({ group, label, unit: 'ms', ...distribution(samples, 0), samples: samples.map((x) => Math.round(x)) });
/** How many times faster `ours` is than `theirs`, p50 against p50. */
const speedUp = (theirs: number[], ours: number[]) => Math.round((distribution(theirs).p50 / distribution(ours).p50) * 10) / 10;
const rows: BenchRow[] = [];
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
    const brick = { first: [] as number[], reattach: [] as number[], detach: [] as number[] };
    const ours = { first: [] as number[], reattach: [] as number[], detach: [] as number[] };
    for (let done = 0; done < rounds; done += BATCH) {
      const n = Math.min(BATCH, rounds - done);
      await withDevices(n, 32, async (devs) => {
        const job = JSON.stringify({ provider, devices: devs, key_hex: randomBytes(32).toString('hex'), link_dir: '/dev/disk/portcullis-bench' });
        const result = await run(['/usr/bin/python3', osBrick], Buffer.from(job));
        if (result.code !== 0) throw new Error(`os-brick: ${result.stderr.toString()}`);
        const times = JSON.parse(result.stdout.toString()) as { first: number[]; reattach: number[]; detach: number[] };
        brick.first.push(...times.first);
        brick.reattach.push(...times.reattach);
        brick.detach.push(...times.detach);
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
    const group = `os-brick side by side, ${provider === 'luks' ? 'LUKS1' : 'LUKS2'}`;
    rows.push(
      dist(group, `os-brick ${provider} first attach (format + open)`, brick.first),
      dist(group, `portcullisd ${provider} first attach (format + open)`, ours.first),
      { group, label: `first attach: portcullisd faster than os-brick (p50)`, unit: '×', value: speedUp(brick.first, ours.first), target: { op: '>=', value: 10 } },
      dist(group, `os-brick ${provider} re-attach`, brick.reattach),
      dist(group, `portcullisd ${provider} re-attach, key cached`, ours.reattach),
      { group, label: `re-attach: portcullisd faster than os-brick (p50)`, unit: '×', value: speedUp(brick.reattach, ours.reattach), target: { op: '>=', value: 5 } },
      dist(group, `os-brick ${provider} detach`, brick.detach),
      dist(group, `portcullisd ${provider} detach`, ours.detach),
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
    const overhead = Math.round((distribution(daemonTimes).p50 / distribution(bare).p50 - 1) * 1000) / 10;
    const group = 'daemon overhead';
    rows.push(
      dist(group, 'bare cryptsetup luksOpen (luks2, same PBKDF), through the same channel', bare),
      dist(group, 'portcullisd attach through the socket, key cached (luks2)', daemonTimes),
      { group, label: 'portcullisd over bare luksOpen (p50)', unit: '%', value: overhead, target: { op: '<=', value: 10 } },
    );
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
    const group = `attach storm, ${STORM} plain volumes`;
    rows.push(
      { group, label: `raw parallel shell loop of ${STORM} cryptsetup create`, unit: 'ms', value: Math.round(rawMs) },
      { group, label: `portcullisd, ${STORM} attaches at once, to all attached`, unit: 'ms', value: Math.round(stormMs) },
      { group, label: 'portcullisd storm over the raw loop', unit: '×', value: Math.round((stormMs / rawMs) * 100) / 100, target: { op: '<=', value: 1.2 } },
      { group, label: 'processes spawned by the storm', unit: 'processes', value: spawned.length, target: { op: '<=', value: 0 }, note: 'with the helper (luks.via: helper) none: its PROBE and OPEN are operations of one long-lived process' },
      { group, label: 'backend fetches (distinct keys)', unit: 'fetches', value: fetched, target: { op: '<=', value: STORM } },
    );
    notes.push(`storm processes by name: ${JSON.stringify(Object.fromEntries([...new Set(spawned)].map((n) => [n, spawned.filter((s) => s === n).length])))}`);
  });

  notes.push(
    `The targets a TCG guest can miss, and why (from the run recorded in docs/benchmarks.md): ${MISSES}`,
    'os-brick times are taken inside its Python process, around attach_volume()/detach_volume(); portcullisd times at the client, around the socket request, so they include every channel round trip to the guest agent.',
    'Under TCG every process costs 100–500 ms, which is why the process count per operation (test/daemon/process-count.vm.test.ts) decides the figures.',
  );
  const [cryptsetupVersion = '', , guestKernel = kernel.runner.where] = versions.split('\n');
  writeResult({
    name: 'vm-attach',
    title: 'Attach on a real kernel: portcullisd beside os-brick',
    parameters: { rounds, storm: STORM, where: kernel.runner.mode },
    rows,
    notes: [`guest kernel ${guestKernel}; ${cryptsetupVersion.trim()}`, ...notes],
    machine: { ...machineInfo(), kernel: guestKernel, where: kernel.runner.mode === 'direct' ? 'this host (direct mode)' : 'qemu TCG guest (2 vCPUs, 2 GiB)' },
  });
} finally {
  await kernel.cleanup();
}
