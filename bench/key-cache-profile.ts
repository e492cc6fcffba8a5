/**
 * The key-cache bench's profiles: where the time of a missed target goes,
 * taken in the same run as the figure. The in-process loops are profiled in
 * an extra window after their measured one (the profiler's own cost stays
 * out of the figure); the daemon's key path on a second daemon started with
 * --cpu-prof under the same load, only the load window's samples counted
 * (its start and shutdown are in the profile too).
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { cpuProfArgs, nowUs, profileInProcess, readCpuProfile } from './profile-capture.js';
import { summarizeProfile, type ProfileSummary } from './profile.js';
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
