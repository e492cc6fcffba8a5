/**
 * Attach on a real kernel, as on a compute host: in the test VM (or this host
 * in direct mode), in one run on the same kernel, os-brick's own encryptors
 * driven as nova drives them, then portcullisd AND its privileged helper
 * inside the guest (bench/guest-attach.ts: the shipped entry point, timed in
 * the guest). Rows: first attach, cached re-attach and detach beside
 * os-brick's, LUKS1 and LUKS2, each side's PBKDF as luksDump shows it; the
 * cached re-attach over a bare `cryptsetup luksOpen` of the same header; a
 * bare luksOpen of an os-brick-formatted header beside one of a
 * portcullisd-formatted header (the PBKDF's share, apart from the daemon's);
 * a 64-volume plain attach storm against a parallel shell loop of raw opens,
 * with the processes the daemon spawned counted by the guest kernel's process
 * accounting. Prints tables, writes bench/results/vm-attach.json; asserts
 * nothing. Never part of `make test`.
 * Run: make build && node dist/bench/vm-attach.js   (BENCH_ROUNDS, default 20)
 */
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { keyslotKdf, type KeyslotKdf } from './guest/pbkdf.js';
import type { GuestAttachResult } from './guest-attach.js';
import { attachRows, MISSES, type BrickTimes } from './vm-attach-rows.js';
import { machineInfo, writeResult } from './results.js';
import { daemonKernel } from '../test/daemon/vm-setup.js';

const rounds = Number(process.env['BENCH_ROUNDS'] ?? 20);
const STORM = 64;
/** One long-lived os-brick process per provider, as nova is (its imports alone take over a minute under TCG). */
const BATCH = Number(process.env['BENCH_BATCH'] ?? rounds);
const osBrick = fileURLToPath(new URL('../../bench/osbrick-encryptor.py', import.meta.url));
const guestAttach = fileURLToPath(new URL('./guest-attach.js', import.meta.url));

const kernel = await daemonKernel();
const run = (argv: string[], stdin?: Buffer) => kernel.runner.run(argv, { ...(stdin === undefined ? {} : { stdin }), timeoutMs: 3_600_000 });
/** Fresh loop devices, freed after use: tmpfs in a 2 GiB guest cannot hold every LUKS2 header of the run at once. */
async function withDevices<T>(count: number, mib: number, fn: (devs: string[]) => Promise<T>): Promise<T> {
  const devs = await kernel.loopDevices(count, mib);
  try {
    return await fn(devs);
  } finally {
    await kernel.sh(`for d in ${devs.join(' ')}; do f=$(losetup --noheadings -O BACK-FILE $d); losetup -d $d; rm -f "$f"; done`);
  }
}

/** os-brick's attach, re-attach and detach of `rounds` fresh devices, in as few Python processes as BATCH allows. */
async function osBrickRounds(provider: 'luks' | 'luks2'): Promise<BrickTimes> {
  const brick = { first: [] as number[], reattach: [] as number[], detach: [] as number[] };
  let kdf: KeyslotKdf | undefined;
  for (let done = 0; done < rounds; done += BATCH) {
    await withDevices(Math.min(BATCH, rounds - done), 32, async (devs) => {
      const job = JSON.stringify({ provider, devices: devs, key_hex: randomBytes(32).toString('hex'), link_dir: '/dev/disk/portcullis-bench' });
      const result = await run(['/usr/bin/python3', osBrick], Buffer.from(job));
      if (result.code !== 0) throw new Error(`os-brick: ${result.stderr.toString()}`);
      const times = JSON.parse(result.stdout.toString()) as Omit<BrickTimes, 'kdf'>;
      brick.first.push(...times.first);
      brick.reattach.push(...times.reattach);
      brick.detach.push(...times.detach);
      // The header os-brick left behind says which PBKDF its opens paid for.
      kdf ??= keyslotKdf(await kernel.sh(`cryptsetup luksDump ${devs[0] ?? ''}`));
    });
  }
  if (kdf === undefined) throw new Error('os-brick formatted no device');
  return { ...brick, kdf };
}

try {
  const versions = await kernel.sh(`cryptsetup --version; dpkg-query -W -f '\${Version}' python3-os-brick; echo; uname -r`);
  console.log(`kernel ${kernel.runner.where} (${kernel.runner.mode}); ${rounds} rounds\n${versions}`);
  const brick = { luks: await osBrickRounds('luks'), luks2: await osBrickRounds('luks2') };
  // The daemon's half, in the guest: nothing crosses the harness channel while it is timed.
  const guest = await run([process.execPath, guestAttach], Buffer.from(JSON.stringify({ rounds, storm: STORM })));
  if (guest.code !== 0) throw new Error(`guest-attach exited ${guest.code}: ${guest.stderr.toString()}`);
  const ours = JSON.parse(guest.stdout.toString()) as GuestAttachResult;
  // Where a cached re-attach's time goes, from the daemon's side: printed for whoever tunes it, not a result.
  for (const p of ['luks', 'luks2'] as const) console.log(`${p} cached re-attach, daemon timings_ms: ${JSON.stringify(ours[p].reattachServer)}\n${ours[p].reattachLog}`);
  const [cryptsetupVersion = '', , guestKernel = kernel.runner.where] = versions.split('\n');
  writeResult({
    name: 'vm-attach',
    title: 'Attach on a real kernel, as on a compute host: portcullisd and its helper beside os-brick, all in the guest',
    parameters: { rounds, storm: STORM, where: kernel.runner.mode, daemon: 'in the guest' },
    rows: attachRows(brick, ours),
    notes: [
      `guest kernel ${guestKernel}; ${cryptsetupVersion.trim()}; node ${ours.versions.node} in the guest`,
      `processes portcullisd spawned (kernel process accounting), LUKS rounds: ${JSON.stringify(ours.attachSpawned.byName)}; storm: ${JSON.stringify(ours.storm.spawned.byName)}`,
      `Why a figure can miss its target in the VM: ${MISSES}`,
      'Both sides are timed inside the guest, around the operation only: os-brick inside its Python process around attach_volume()/detach_volume(); portcullisd by bench/guest-attach.ts around each request on the daemon\'s unix socket; bare luksOpens around the cryptsetup process, key on stdin.',
      'Each PBKDF is read from `cryptsetup luksDump` of a header formatted in this run, never assumed.',
    ],
    machine: { ...machineInfo(), kernel: guestKernel, where: kernel.runner.mode === 'direct' ? 'this host (direct mode)' : 'qemu TCG guest (2 vCPUs, 2 GiB)' },
  });
} finally {
  await kernel.cleanup();
}
