/**
 * Why the key-cache bench's targets miss, from the run itself: the profiles
 * (the in-process loops in an extra window after their measured one, so the
 * profiler's own cost stays out of the figure; the daemon's key path on a
 * second daemon started with --cpu-prof under the same load, counting only
 * the load window's samples, its start and shutdown being in the profile
 * too) and the notes printed under the tables, which carry those profiles
 * beside the mechanisms a profile cannot name (why a lent view must be
 * detached, which path a real host takes instead).
 */
import { mkdirSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { cpuProfArgs, nowUs, profileInProcess, readCpuProfile } from './profile-capture.js';
import { profileParagraph, summarizeProfile, type ProfileSummary } from './profile.js';
import { startBenchDaemon } from './daemon.js';

/** Runs `one` back to back for `ms` under the in-process profiler. */
export async function profileLoop(one: () => unknown, ms: number): Promise<ProfileSummary> {
  const { profile } = await profileInProcess(async () => {
    const start = Date.now();
    while (Date.now() - start < ms) for (let i = 0; i < 1000; i++) await one();
  });
  return summarizeProfile(profile, { top: 12 });
}

/**
 * A daemon on `config`, in `dir` (beside the bench's keystore, removed with
 * it), profiled while `load` runs against its socket; `prepare` first (the
 * request that caches the key). Undefined, with the reason, when the daemon
 * wrote no profile in time.
 */
export async function profileDaemon(
  config: Record<string, unknown>,
  dir: string,
  prepare: (socketPath: string) => Promise<unknown>,
  load: (socketPath: string) => Promise<unknown>,
): Promise<ProfileSummary | string> {
  const profDir = join(dir, 'cpu-profile');
  mkdirSync(profDir, { recursive: true, mode: 0o700 });
  const daemon = await startBenchDaemon(config, { dir, execArgv: cpuProfArgs(profDir) });
  let window: { fromUs: number; toUs: number };
  try {
    await prepare(daemon.socketPath);
    const fromUs = nowUs();
    await load(daemon.socketPath);
    window = { fromUs, toUs: nowUs() };
  } finally {
    // SIGTERM: the daemon drains and exits normally, which is when node writes the profile.
    await daemon.stop();
  }
  const profile = await readCpuProfile(profDir, 10_000);
  if (profile === undefined) return `no profile written by the daemon within 10 s of its exit (exit code ${String(daemon.child.exitCode)}, signal ${String(daemon.child.signalCode)})`;
  return summarizeProfile(profile, { top: 12, window });
}

export interface KeyCacheFigures {
  /** In-process rates, gets/s. */
  locked: number;
  lent: number;
  /** Over the socket, req/s. */
  bare: number;
  keyPath: number;
  keyPaths: number;
  /** How long each profile window ran, s. */
  profileSeconds: number;
  profiles: { get: ProfileSummary; lend: ProfileSummary; keyPath: ProfileSummary | string };
}

export function keyCacheNotes(f: KeyCacheFigures): string[] {
  return [
    "This host has no device-mapper, so no volume can be attached here. The socket figures use requests that need none: health; an attach with provider nop (os-brick's NoOpEncryptor: answered after validation, peer credentials, admission and the per-volume lock, before any key); and a LUKS attach whose key comes from the cache and whose device does not exist (the daemon fetches the key before it looks at the device, so this runs everything up to the device, the cache hit lending its key and the audit line included, then answers E_DEVICE_NOT_FOUND).",
    'What the idempotent re-attach of a really attached LUKS volume adds to that last request: the device identity (one in-process stat instead of the failing one), the mapping status read from sysfs and the ownership record compared; no process is spawned. bench/vm-attach.ts measures it on a real kernel.',
    `Why the socket figures miss 20,000 req/s and the key path misses a fifth of the bare ceiling: the client runs on the same 2 cores as the daemon, the machine is shared (1-minute load average ${loadavg()[0]?.toFixed(1)} when these rows were taken), and the daemon does about ${Math.round(f.bare / Math.max(1, f.keyPaths))}× the work of the bare server per key-path request. Where that work goes is the profile below, of a second daemon started with node --cpu-prof after the measured ones and put under the same single-volume key-path load for ${f.profileSeconds} s, counting only the samples of the load window (idle is the daemon waiting for the client, which shares its cores). In it, node's HTTP parsing and the answer's writev are node: http/net/streams and native code; the attach outcome and the audit line (one JSON line each) are built in src/daemon/log-line.ts and written through winston and its streams; the absent device's fs.promises.lstat, the ENOENT error Node builds for it and the E_DEVICE_NOT_FOUND error with its stack trace are node: fs, node: other internals and src/luks, a path a host with the device does not take. Taken off the path in issue 22's work: the locked copy per request (the key is now lent from the cache's slab), winston's format pipeline, and an E_BAD_REQUEST with its stack trace built and thrown away on every request's close. Requests for one volume queue on its lock by design; across 32 volumes they run side by side.`,
    profileParagraph(`the daemon under the single-volume key path (PUT attach, key from the cache, device absent; ${f.profileSeconds} s, load window only)`, f.profiles.keyPath),
    'GET /v1/health on this host re-runs its host checks (cryptsetup --version, dmsetup targets: two processes) on every call, because they fail without device-mapper and a failed check is never remembered; on a host with dm-crypt they are cached for 30 s, and health costs what the nop attach does.',
    `Why in-process cached gets miss 1 M/s (${f.locked.toLocaleString('en-US')} get()s/s, ${f.lent.toLocaleString('en-US')} withKey()s/s in this run): keys sit in slots of shared locked slab pages, so no call maps, locks or unmaps a page, and withKey() lends the cache's own bytes with no copy. What bounds both is that the lent (or copied) bytes must be unusable once the caller is done, and the only way to make a Buffer unusable is to detach its ArrayBuffer: every call needs a Buffer of its own over the locked bytes, made by napi_create_external_buffer (a BackingStore with a deleter and a finalizer) and detached afterwards. Those N-API calls are the native code in the profiles below, shown as notify called by secureLend, secureAlloc or secureWipe in native/index.ts (every function of the addon runs through one N-API trampoline, which V8 names after the last one made), and the finalizers they schedule are part of GC; the rest is the managed object around the bytes (makeManagedObject) and the lookup (answer: the cache key; denial: the check for a remembered no, which hashes that key first). Lending a copy into a reused scratch slot, or the entry's own Buffer without revoking it, would pass 1 M/s but break the rule that a lent buffer is unusable afterwards; V8's C++ API (one ArrayBuffer per shared BackingStore, no finalizer) could meet both, at the price of an addon tied to one V8 ABI. A host's attaches need a few keys per second, each then waiting for cryptsetup.`,
    profileParagraph(`the in-process withKey() loop (locked memory, ${f.profileSeconds} s after the measured window)`, f.profiles.lend),
    profileParagraph(`the in-process get() loop (locked memory, each copy zeroized; ${f.profileSeconds} s after the measured window)`, f.profiles.get),
    'Found on the way and fixed (with tests): the native secure-buffer registry was one list walked by every wipe and every GC finalizer, wiped buffers included until the GC ran, so a few hundred thousand cached gets made each wipe O(n) and a process spent minutes in finalizers (now a hash table that released buffers leave at once); managed objects and secret buffers each had a getter made of a fresh closure, which gives every object its own hidden class (now a shared prototype getter and a data property); and the attach log line redacted timings_ms.key, the key fetch time, as if it were a key. Since issue 22: a locked page (4,096 bytes) per 64-byte key, now a 64-byte slot of a shared slab; and the request body reader building an error with a stack trace on every request.',
  ];
}
