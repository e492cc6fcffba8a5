/**
 * Data integrity and secret hygiene on a real kernel, through two real
 * daemons: one on the embedded local keystore, one on a real Barbican.
 * Cycles of attach → write random blocks → detach → reattach → verify, for
 * luks1, luks2 and plain on each backend, concurrently; then a storm of
 * concurrent attaches and detaches on overlapping names and devices, whose
 * end state must be what the last answered request of each name says.
 * Every command either daemon spawned (its argv is the process's
 * /proc/PID/cmdline), both logs and every error body are scanned for every
 * key used, in every form. PORTCULLIS_INTEGRITY_CYCLES sets the cycles
 * (make test: 102; make soak: 1002).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { parse } from 'yaml';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import type { Answer, DaemonProcess } from '../fixtures/daemon.js';
import { countingRunner, type CountingRunner } from '../helpers/counting-runner.js';
import { findSecrets, type Haystack } from '../helpers/secret-scan.js';
import { GUEST_HELPER_LOG } from '../vm/helper-link.js';
import { startBarbicanDaemon, type BarbicanDaemon } from './barbican-daemon.js';
import { createKeyIn, localKeystoreDaemon, ok } from './vm-setup.js';

const cycles = Number(process.env['PORTCULLIS_INTEGRITY_CYCLES'] ?? 102);
const cli = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const providers = ['luks', 'luks2', 'plain'] as const;
/** The first MiB of the mapping, hashed: two processes. */
const HASH = (name: string) => `dd if=/dev/mapper/${name} bs=1M count=1 status=none | sha256sum`;
const hashOf = (line: string) => line.split(' ')[0] ?? '';

let setup: BarbicanDaemon;
let local: DaemonProcess;
let barbicanDaemon: DaemonProcess;
const counters: CountingRunner[] = [];
const keys: Buffer[] = [];
const answers: Answer[] = [];

interface Stream {
  daemon: DaemonProcess;
  backend: string;
  provider: (typeof providers)[number];
  keyId: string;
}

/** A request whose answer joins the scanned haystacks. */
async function call(daemon: DaemonProcess, method: string, path: string, body?: unknown): Promise<Answer> {
  const answer = await daemon.call(method, path, body);
  answers.push(answer);
  return answer;
}

before(async () => {
  setup = await startBarbicanDaemon();
  const kernel = setup.kernel;
  const throughLocal = countingRunner(kernel.runner);
  const throughBarbican = countingRunner(kernel.runner);
  counters.push(throughLocal, throughBarbican);
  local = await localKeystoreDaemon(kernel, throughLocal);
  // The fixture's Barbican daemon, restarted with the same config behind a counting runner.
  await setup.daemon.stop();
  const config = parse(readFileSync(setup.daemon.configPath, 'utf8')) as Record<string, unknown>;
  delete config['socket'];
  barbicanDaemon = await kernel.daemon({ dir: setup.daemon.dir, config }, throughBarbican);
});
after(async () => {
  await setup?.stop();
});

async function newStream(daemon: DaemonProcess, backend: string, provider: Stream['provider']): Promise<Stream> {
  if (backend === 'local') {
    const keyId = createKeyIn(daemon, 'tenant-i');
    const got = spawnSync(process.execPath, [cli, '--config', daemon.configPath, 'key', 'get', keyId, '--project', 'tenant-i'], { encoding: 'utf8' });
    keys.push(Buffer.from(got.stdout.trim(), 'hex'));
    return { daemon, backend, provider, keyId };
  }
  const keyId = await setup.newKey('tenant-i');
  const key = await setup.direct.get({ projectId: 'tenant-i' }, keyId);
  keys.push(Buffer.from(key.bytes()));
  key.zeroize();
  return { daemon, backend, provider, keyId };
}

describe('attach → write → detach → reattach → verify', () => {
  it(`${cycles} cycles over luks1, luks2 and plain on the local keystore and Barbican: 0 mismatches`, async () => {
    const kernel = setup.kernel;
    const streams: Stream[] = [];
    for (const [daemon, backend] of [[local, 'local'], [barbicanDaemon, 'barbican']] as const) {
      for (const provider of providers) streams.push(await newStream(daemon, backend, provider));
    }
    const devices = await kernel.loopDevices(streams.length, 32);
    const perStream = Math.ceil(cycles / streams.length);
    let done = 0;
    const mismatches: string[] = [];
    await Promise.all(
      streams.map(async (s, i) => {
        const name = `pd-int-${s.backend}-${s.provider}`;
        const body = { device: devices[i], provider: s.provider, key: { id: s.keyId }, project_id: 'tenant-i', format: 'if-blank' };
        for (let c = 0; c < perStream; c++) {
          ok(await call(s.daemon, 'PUT', `/v1/volumes/${name}`, body));
          // 64 random 4 KiB blocks at a random place in the first MiB (one dd: every process costs 0.1–0.5 s
          // under TCG), then the hash of that whole MiB.
          const written = hashOf(await kernel.sh(`dd if=/dev/urandom of=/dev/mapper/${name} bs=4096 count=64 seek=${Math.floor(Math.random() * 192)} conv=notrunc,fsync status=none && ${HASH(name)}`));
          ok(await call(s.daemon, 'DELETE', `/v1/volumes/${name}`));
          ok(await call(s.daemon, 'PUT', `/v1/volumes/${name}`, body));
          const read = hashOf(await kernel.sh(HASH(name)));
          if (read !== written) mismatches.push(`${name} cycle ${c}`);
          ok(await call(s.daemon, 'DELETE', `/v1/volumes/${name}`));
          done += 1;
        }
      }),
    );
    assert.deepEqual(mismatches, []);
    assert.ok(done >= cycles, `${done} cycles`);
  });
});

describe('a storm of attaches and detaches on overlapping names and devices', () => {
  it('ends in the state the last answered request of each name says, and no success was answered for work not done', async () => {
    const kernel = setup.kernel;
    const devices = await kernel.loopDevices(4, 1);
    const keyId = createKeyIn(local, 'tenant-i');
    const names = ['pd-storm-a', 'pd-storm-b', 'pd-storm-c'];
    // 60 requests, each name and device named by several at once, issued together.
    const plan = Array.from({ length: 60 }, (_, i) => ({ name: names[i % 3] ?? '', device: devices[(i * 7) % 4] ?? '', attach: i % 4 !== 3 }));
    const results = await Promise.all(
      plan.map(async (p) => ({ ...p, answer: await call(local, p.attach ? 'PUT' : 'DELETE', `/v1/volumes/${p.name}`, p.attach ? { device: p.device, provider: 'plain', key: { id: keyId }, project_id: 'tenant-i' } : undefined) })),
    );
    for (const r of results) assert.ok([200, 409].includes(r.answer.status), `only success or a conflict: ${r.answer.status} ${r.answer.text}`);
    // The kernel's state per name, against what the daemon reports.
    for (const name of names) {
      const mapped = await kernel.sh(`dmsetup ls | cut -f1 | grep -c -x ${name} || true`);
      const view = await local.call('GET', `/v1/volumes/${name}`);
      assert.equal(view.status === 200 ? '1' : '0', mapped, `${name}: the daemon's view and the kernel agree`);
      if (view.status === 200) {
        const device = (view.body as { device: string }).device;
        const backing = await kernel.sh(`cryptsetup status ${name} | sed -n 's/^ *device: *//p'`);
        assert.equal(device, backing);
        assert.ok(results.some((r) => r.name === name && r.attach && r.answer.status === 200 && r.device === device), `${name} is mapped to a device an answered attach named`);
      }
    }
    // No two names on one device, ever.
    const slaves = await kernel.sh(`for n in ${names.join(' ')}; do cryptsetup status $n 2>/dev/null | sed -n 's/^ *device: *//p'; done | sort | uniq -d`);
    assert.equal(slaves, '', 'a device mapped under two names');
    for (const name of names) ok(await local.call('DELETE', `/v1/volumes/${name}`));
  });
});

describe('secret hygiene across the suite', () => {
  it("no key appears, in any form, in any spawned argv, either daemon's log, any answer, or the helper's log, argv or environment", async () => {
    // The helper beside the kernel: its log file and, for each helper process, its argv and environment.
    const helperLog = await setup.kernel.sh(`cat ${GUEST_HELPER_LOG}`);
    const helperProcs = await setup.kernel.sh(`for p in $(pgrep -x portcullis-help); do echo "== $p"; tr '\\0' ' ' < /proc/$p/cmdline; echo; tr '\\0' '\\n' < /proc/$p/environ; done`);
    assert.match(helperLog, /"event":"op_done","op":"OPEN"/, 'the helper logged the opens it did');
    assert.match(helperProcs, /^== \d+\n\S*portcullis-helper --fd 3/m, 'a helper process to look at');
    const haystacks: Haystack[] = [
      { name: 'helper log', data: helperLog },
      { name: 'helper argv and environment', data: helperProcs },
      ...counters.flatMap((c, i) => c.commands.map((argv) => ({ name: `daemon ${i} argv ${argv.join(' ').slice(0, 60)}`, data: argv.join('\0') }))),
      { name: 'local daemon log', data: local.log() },
      { name: 'barbican daemon log', data: barbicanDaemon.log() },
      ...answers.map((a, i) => ({ name: `answer ${i}`, data: a.text })),
    ];
    // With the privileged helper no attach spawns a command; the daemons' helper frames (which do carry keys) never leave the socketpair.
    assert.ok(keys.length >= 6 && answers.length > 0 && counters.every((c) => c.ops.some((op) => op === 'helper:OPEN')), 'the scan has keys, answers and opens to look at');
    assert.deepEqual(findSecrets(keys, haystacks), []);
  });
});
