/**
 * Where one daemon start goes, for the memory-start bench's start target:
 * a start under node --cpu-prof, from spawn to READY=1 only (V8's profile
 * and process.hrtime share a clock, so the samples after READY=1, and the
 * shutdown that writes the profile, are left out). One start, not the
 * measured ones: the profiler slows the start it watches a little.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { startBenchDaemon } from './daemon.js';
import { startNotifyListener } from './notify-listener.js';
import { cpuProfArgs, readCpuProfile } from './profile-capture.js';
import { summarizeProfile, type ProfileSummary } from './profile.js';

/** The summary of one profiled start in `dir` (its own directory), or why there is none. */
export async function profileStart(config: Record<string, unknown>, dir: string): Promise<{ summary: ProfileSummary; readyMs: number } | string> {
  const profDir = join(dir, 'cpu-profile');
  mkdirSync(profDir, { recursive: true, mode: 0o700 });
  const listener = await startNotifyListener(join(dir, 'notify.sock'));
  let window: { fromUs: number; toUs: number };
  try {
    const t0 = process.hrtime.bigint();
    const daemon = await startBenchDaemon(config, { dir, env: { NOTIFY_SOCKET: listener.path }, noWait: true, execArgv: cpuProfArgs(profDir) });
    try {
      const ready = await listener.next('READY=1', t0, 30_000);
      window = { fromUs: Number(t0 / 1000n), toUs: Number(ready / 1000n) };
    } finally {
      // SIGTERM: a normal exit, which is when node writes the profile.
      await daemon.stop();
    }
    const profile = await readCpuProfile(profDir, 10_000);
    if (profile === undefined) return `no profile written within 10 s of the daemon's exit (code ${String(daemon.child.exitCode)}, signal ${String(daemon.child.signalCode)})`;
    return { summary: summarizeProfile(profile, { top: 10, window }), readyMs: (window.toUs - window.fromUs) / 1000 };
  } finally {
    listener.stop();
  }
}
