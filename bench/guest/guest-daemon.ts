/**
 * What bench/guest-attach.ts sets up inside the guest, as on a compute host:
 * a local keystore holding the bench's keys, the shipped portcullisd entry
 * point on it with the privileged helper (luks.via: helper), loop devices on
 * the guest's tmpfs, and cryptsetup run with the key on stdin. Nothing here
 * is timed; the timing is the caller's.
 */
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { hexPassphrase } from '../../src/luks/commands/passphrase.js';
import { localBackend } from '../../src/keyclient/backends/local/backend.js';
import { objectOfType } from '../../src/keyclient/objects/index.js';
import { adoptSecret, plainAllocator } from '../../src/util/secure-memory.js';
import { startDaemonProcess, type DaemonProcess } from '../../test/fixtures/daemon.js';
import { repoRoot } from '../results.js';

export interface BenchKey {
  id: string;
  /** The raw key, kept by the bench only to give a bare cryptsetup the same passphrase; wiped by wipeKeys(). */
  bytes: Buffer;
}

export interface GuestDaemon {
  daemon: DaemonProcess;
  /** The keys, in the daemon's keystore before it started: no key creation is timed. */
  keys: BenchKey[];
  /** The daemon's pid, for counting the processes it spawns. */
  pid: number;
}

const project = 'bench';

/** Stores `count` random 512-bit AES keys (AES-256-XTS) in a fresh local keystore under `dir`. */
async function storeKeys(dir: string, count: number): Promise<BenchKey[]> {
  const allocator = plainAllocator();
  const km = await localBackend.create(localBackend.optionsSchema.parse({ path: `${dir}/keystore.db`, kek_file: `${dir}/kek` }), { allocator });
  const keys: BenchKey[] = [];
  try {
    for (let i = 0; i < count; i += 1) {
      const bytes = randomBytes(64);
      // adoptSecret wipes what it is given: hand it a copy.
      const obj = objectOfType('symmetric', { algorithm: 'aes', bitLength: 512, name: `bench-${i}` }, adoptSecret(allocator, Buffer.from(bytes)));
      try {
        keys.push({ id: await km.store({ projectId: project }, obj), bytes });
      } finally {
        obj.zeroize();
      }
    }
  } finally {
    await km.close();
  }
  return keys;
}

/** A keystore with `keyCount` keys, then the daemon on it, answering on its socket (bounded wait). */
export async function startGuestDaemon(keyCount: number): Promise<GuestDaemon> {
  const dir = mkdtempSync('/run/portcullis-bench-');
  const keys = await storeKeys(dir, keyCount);
  const daemon = await startDaemonProcess({
    dir,
    entry: join(repoRoot, 'dist', 'src', 'daemon', 'portcullisd.js'),
    config: {
      key_manager: { backend: 'local', local: { path: `${dir}/keystore.db`, kek_file: `${dir}/kek` } },
      // The shipped defaults for PBKDF and key size; the helper named, as a package would install it.
      luks: { via: 'helper', helper_path: join(repoRoot, 'helper', 'build', 'portcullis-helper') },
      log: { format: 'json', level: 'info' },
    },
    readyTimeoutMs: 300_000,
  });
  const pid = daemon.child.pid;
  if (pid === undefined) throw new Error('portcullisd has no pid');
  return { daemon, keys, pid };
}

export function wipeKeys(keys: readonly BenchKey[]): void {
  for (const k of keys) k.bytes.fill(0);
}

export const attachBody = (device: string, provider: string, key: BenchKey) => ({ device, provider, key: { id: key.id }, project_id: project, format: 'if-blank' });

/** Runs a shell script (no key in it); throws on a non-zero exit. */
export function sh(script: string): string {
  const run = spawnSync('sh', ['-c', script], { encoding: 'utf8' });
  if (run.status !== 0) throw new Error(`sh -c '${script}' failed: ${run.stderr}`);
  return run.stdout.trim();
}

/** `count` loop devices over fresh sparse files of `mib` MiB in the guest's tmpfs. */
export function loopDevices(count: number, mib: number): string[] {
  const prefix = `/scratch/guest-attach-${randomBytes(4).toString('hex')}`;
  return sh(`for i in $(seq 1 ${count}); do truncate -s ${mib}M ${prefix}-$i.img && losetup --find --show ${prefix}-$i.img || exit 1; done`).split('\n');
}

/** Detaches the loops and deletes their files: tmpfs in a 2 GiB guest cannot hold every LUKS2 header of the run. */
export function freeDevices(devs: readonly string[]): void {
  sh(`for d in ${devs.join(' ')}; do f=$(losetup --noheadings -O BACK-FILE $d); losetup -d $d; rm -f "$f"; done`);
}

/** cryptsetup with `stdin` (a passphrase) written to it, never in argv; resolves when it exited 0. */
export function cryptsetup(args: readonly string[], stdin: Buffer = Buffer.alloc(0)): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('cryptsetup', args, { stdio: ['pipe', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`cryptsetup ${args[0] ?? ''} exited ${code}: ${err.trim()}`))));
    child.stdin.on('error', () => undefined);
    child.stdin.end(stdin);
  });
}

/** The hex passphrase os-brick and portcullisd derive from a key, built in a Buffer (never a string) that the caller wipes. */
export function hexOf(key: BenchKey): Buffer {
  return hexPassphrase(key.bytes);
}
