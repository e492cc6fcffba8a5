/**
 * Taking the CPU profiles bench/profile.ts summarizes: in this process
 * through node:inspector (a loop the bench runs itself), or from a child
 * started with `node --cpu-prof --cpu-prof-dir=DIR` (the daemon), which
 * writes its profile only when it exits normally, so a child killed by a
 * signal it does not handle leaves none; every wait for it is bounded.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { join } from 'node:path';
import type { CpuProfile } from './profile.js';

/** Microseconds between samples, --cpu-prof's default: fine enough for a window of a second or more. */
export const SAMPLING_US = 1000;

/** Node options that make a child write its profile into `dir` at exit. */
export function cpuProfArgs(dir: string): string[] {
  return ['--cpu-prof', `--cpu-prof-dir=${dir}`, `--cpu-prof-interval=${SAMPLING_US}`];
}

/** Runs `work` under V8's sampling profiler in this process; the profile covers only it. */
export async function profileInProcess<T>(work: () => Promise<T>): Promise<{ result: T; profile: CpuProfile }> {
  const session = new Session();
  session.connect();
  try {
    await session.post('Profiler.enable');
    await session.post('Profiler.setSamplingInterval', { interval: SAMPLING_US });
    await session.post('Profiler.start');
    // Stopped even when the work throws: a running profiler would slow everything after it.
    const outcome = await work().then(
      (value) => ({ ok: true as const, value }),
      (error: unknown) => ({ ok: false as const, error }),
    );
    const { profile } = await session.post('Profiler.stop');
    if (!outcome.ok) throw outcome.error;
    return { result: outcome.value, profile: profile as CpuProfile };
  } finally {
    session.disconnect();
  }
}

/**
 * The one .cpuprofile a child wrote into `dir`, read once it parses (Node
 * writes it while the process exits, so the caller waits for the exit
 * first); undefined after `timeoutMs` without one.
 */
export async function readCpuProfile(dir: string, timeoutMs = 10_000): Promise<CpuProfile | undefined> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const files = existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.cpuprofile')) : [];
    if (files.length > 1) throw new Error(`expected one profile in ${dir}, found ${files.join(', ')}`);
    const file = files[0];
    if (file !== undefined) {
      try {
        return JSON.parse(readFileSync(join(dir, file), 'utf8')) as CpuProfile;
      } catch {
        // Still being written: try again until the deadline.
      }
    }
    if (Date.now() > deadline) return undefined;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Now on the profile's clock (V8 and process.hrtime share CLOCK_MONOTONIC), µs: window bounds for summarizeProfile. */
export function nowUs(): number {
  return Number(process.hrtime.bigint() / 1000n);
}
