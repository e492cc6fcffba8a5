import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { secureAlloc, secureStats, secureWipe } from '../../native/index.js';
import { fillPattern } from './fixtures/pattern.js';

/** The compiled child fixture (fixtures/child.ts): one scenario per run, one JSON line on stdout. */
export const childScript = fileURLToPath(new URL('./fixtures/child.js', import.meta.url));

/** Debian's `nobody`: a uid without CAP_IPC_LOCK and unlike ours. */
export const NOBODY = 65534;

export interface ChildResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface ChildOptions {
  /** Run as nobody (uid and gid 65534). */
  asNobody?: boolean;
  /** Node flags, e.g. --expose-gc. */
  execArgv?: string[];
  /** prlimit(1) options applied before node starts, e.g. --core=unlimited. */
  limits?: string[];
  cwd?: string;
  env?: NodeJS.ProcessEnv;
}

/** Runs `node child.js scenario ...args` to completion. Behaviour that may crash runs here, never in the runner. */
export function runChild(scenario: string, args: string[] = [], options: ChildOptions = {}): Promise<ChildResult> {
  const nodeArgs = [...(options.execArgv ?? []), childScript, scenario, ...args];
  const [command, argv] =
    options.limits === undefined ? [process.execPath, nodeArgs] : ['/usr/bin/prlimit', [...options.limits, process.execPath, ...nodeArgs]];
  const child = spawn(command, argv, {
    cwd: options.cwd ?? '/',
    env: options.env ?? process.env,
    stdio: ['ignore', 'pipe', 'pipe'],
    ...(options.asNobody === true ? { uid: NOBODY, gid: NOBODY } : {}),
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

/** The child's one JSON report, after checking that it exited cleanly. */
export function report(result: ChildResult): Record<string, unknown> {
  if (result.code !== 0) throw new Error(`child failed (code ${result.code}, signal ${result.signal}): ${result.stderr}`);
  const parsed: unknown = JSON.parse(result.stdout);
  if (typeof parsed !== 'object' || parsed === null) throw new Error(`child printed ${result.stdout}`);
  return parsed as Record<string, unknown>;
}

/** VmLck of /proc/<pid>/status in bytes: the memory the kernel holds locked for the process. */
export function vmLckBytes(pid: number | 'self' = 'self'): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const match = /^VmLck:\s+(\d+) kB$/m.exec(status);
  if (match?.[1] === undefined) throw new Error('no VmLck line in /proc/self/status');
  return Number(match[1]) * 1024;
}

/**
 * Total size of this process's mappings whose VmFlags carry every one of
 * `flags` (smaps spells locked "lo", don't-dump "dd", wipe-on-fork "wf").
 * A sum rather than a count, because the kernel merges adjacent alike VMAs.
 */
export function mappedBytesWithFlags(...flags: string[]): number {
  let total = 0;
  let size = 0;
  for (const line of readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
    const sizeMatch = /^Size:\s+(\d+) kB$/.exec(line);
    if (sizeMatch?.[1] !== undefined) size = Number(sizeMatch[1]) * 1024;
    if (line.startsWith('VmFlags:')) {
      const present = new Set(line.slice('VmFlags:'.length).trim().split(/\s+/));
      if (flags.every((flag) => present.has(flag))) total += size;
    }
  }
  return total;
}

/** The kernel's page size, as the addon rounds to it: what one 1-byte secure buffer locks. */
export const pageSize: number = (() => {
  const before = secureStats().lockedBytes;
  const probe = secureAlloc(1);
  const size = secureStats().lockedBytes - before;
  secureWipe(probe);
  return size;
})();

/** What a secure buffer of `bytes` locks when it is alone in its size class: whole pages, at least one. */
export const pagesFor = (bytes: number): number => Math.max(1, Math.ceil(bytes / pageSize)) * pageSize;

/** The pattern fixtures/child.js writes for `seed`, to search a core dump for. */
export function pattern(seed: number, length: number): Buffer {
  const bytes = Buffer.alloc(length);
  fillPattern(bytes, seed);
  return bytes;
}
