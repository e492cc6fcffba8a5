/**
 * The real portcullisd (dist/src/daemon/portcullisd.js, production deps:
 * locked key memory, cryptsetup on this host) as a bench target: its own
 * directory, config and socket, its log to a file as journald would take
 * it, so the bench process does not pay for collecting it. Every wait is
 * bounded; stop() is safe to call twice.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, openSync, closeSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { request, type Answer } from '../test/fixtures/daemon.js';
import { repoRoot } from './results.js';

export const portcullisd = join(repoRoot, 'dist', 'src', 'daemon', 'portcullisd.js');

/** Daemons still running, killed if the bench exits early: one exit hook for all (a fleet has many). */
const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

export interface BenchDaemon {
  readonly dir: string;
  readonly socketPath: string;
  readonly configPath: string;
  readonly child: ChildProcess;
  readonly pid: number;
  call(method: string, path: string, body?: unknown): Promise<Answer>;
  /** The daemon's log so far. */
  log(): string;
  stop(): Promise<void>;
}

export interface BenchDaemonOptions {
  /** Directory to run in, the caller's to remove; default a fresh one under the tmpdir, removed by stop(). */
  dir?: string;
  /** More environment (NOTIFY_SOCKET); PATH is always passed, nothing else. */
  env?: Record<string, string>;
  /** @default 60000 */
  readyTimeoutMs?: number;
  /** Node options before the script (--cpu-prof). */
  execArgv?: string[];
  /** Do not wait for the socket to answer (the caller watches READY=1 itself). */
  noWait?: boolean;
}

/** A config with the socket, volumes file and audit log under `dir`, JSON logs. */
export function benchConfig(dir: string, config: Record<string, unknown>): Record<string, unknown> {
  return { ...config, socket: { path: join(dir, 'portcullis.sock') }, log: { format: 'json', audit_file: join(dir, 'audit.log'), ...(config['log'] as object | undefined) } };
}

export async function startBenchDaemon(config: Record<string, unknown>, options: BenchDaemonOptions = {}): Promise<BenchDaemon> {
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), 'portcullis-bench-'));
  const ownDir = options.dir === undefined;
  const full = benchConfig(dir, config);
  const configPath = join(dir, 'portcullis.yaml');
  writeFileSync(configPath, stringify(full), { mode: 0o600 });
  const socketPath = join(dir, 'portcullis.sock');
  const logPath = join(dir, 'daemon.log');
  const fd = openSync(logPath, 'w', 0o600);
  const child = spawn(process.execPath, [...(options.execArgv ?? []), portcullisd, '--config', configPath], {
    env: { PATH: process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin', ...options.env },
    stdio: ['ignore', fd, fd],
  });
  closeSync(fd);
  let exited = false;
  running.add(child);
  const exit = new Promise<void>((resolve) => child.once('exit', () => ((exited = true), running.delete(child), resolve())));
  const log = () => (existsSync(logPath) ? readFileSync(logPath, 'utf8') : '');
  const kill = () => child.kill('SIGKILL');
  const daemon: BenchDaemon = {
    dir,
    socketPath,
    configPath,
    child,
    pid: child.pid ?? -1,
    call: (method, path, body) => request(socketPath, method, path, body),
    log,
    async stop() {
      if (!exited) child.kill('SIGTERM');
      const timer = setTimeout(kill, 30_000);
      await exit;
      clearTimeout(timer);
      // It holds a keystore, its KEK and an audit log: nothing to leave in /tmp.
      if (ownDir) rmSync(dir, { recursive: true, force: true });
    },
  };
  if (options.noWait === true) return daemon;
  const deadline = Date.now() + (options.readyTimeoutMs ?? 60_000);
  // Ready when the socket answers (the daemon listens only after its start-up work); the log may be at warn.
  const answers = async () => existsSync(socketPath) && (await request(socketPath, 'GET', '/v1/cache').then(() => true, () => false));
  while (!(await answers())) {
    if (exited) throw new Error(`portcullisd exited before it was ready:\n${log()}`);
    if (Date.now() > deadline) {
      kill();
      throw new Error(`portcullisd was not ready in time:\n${log()}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return daemon;
}

/** VmRSS, VmHWM and VmLck of a process, in bytes. */
export function processMemory(pid: number): { rss: number; hwm: number; locked: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(status)?.[1] ?? Number.NaN) * 1024;
  return { rss: kib('VmRSS'), hwm: kib('VmHWM'), locked: kib('VmLck') };
}
