/**
 * What the systemd tests share: the repository's paths, configs on a private
 * directory, a portcullisd process started under any wrapper command
 * (systemd-socket-activate, setpriv, prlimit, an installed wrapper), and a
 * NOTIFY_SOCKET receiver standing in for systemd. Every wait is bounded.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { notify } from '../../native/index.js';

/** The checkout (dist/test/systemd/ is three levels down). */
export const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));
/** The test entry point of the real daemon (test/fixtures/daemon-main.ts). */
export const daemonMain = fileURLToPath(new URL('../fixtures/daemon-main.js', import.meta.url));
export const isRoot = process.getuid?.() === 0;

export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `portcullis-${prefix}-`));
}

/** A local-keystore config in `dir` with JSON debug logs; `extra` replaces whole sections. */
export function writeConfig(dir: string, extra: Record<string, unknown> = {}): string {
  const config = {
    key_manager: { backend: 'local', local: { path: join(dir, 'keystore.db'), kek_file: join(dir, 'kek') } },
    socket: { path: join(dir, 'portcullis.sock') },
    log: { level: 'debug', format: 'json' },
    ...extra,
  };
  const path = join(dir, 'portcullis.yaml');
  writeFileSync(path, stringify(config));
  return path;
}

/** `make ARGS` in the checkout; throws with make's output when it fails. */
export function make(args: string[]): string {
  const result = spawnSync('make', ['-s', '-C', repoRoot, ...args], { encoding: 'utf8', timeout: 300_000 });
  if (result.status !== 0) throw new Error(`make ${args.join(' ')} failed (${String(result.status)}):\n${result.stdout}${result.stderr}`);
  return result.stdout;
}

export interface RunningDaemon {
  readonly child: ChildProcess;
  readonly pid: number;
  /** Everything written to stdout and stderr so far. */
  log(): string;
  /** The JSON log lines so far (others skipped). */
  entries(): Array<Record<string, unknown>>;
  /** Resolves once `test` holds for the output, rejects after `ms` or when the process exits first. */
  waitForLog(test: (log: string) => boolean, ms?: number): Promise<void>;
  /** Sends `signal` (default SIGTERM), waits for exit, resolves the exit code; SIGKILL after 60 s. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  exited: Promise<number | null>;
}

/** Starts `argv` (a daemon, possibly behind wrappers) with exactly `env` plus PATH. */
export function spawnDaemon(argv: string[], env: Record<string, string> = {}, cwd = '/'): RunningDaemon {
  const [command, ...args] = argv;
  if (command === undefined) throw new Error('empty argv');
  const child = spawn(command, args, { cwd, env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const listeners = new Set<() => void>();
  const append = (chunk: Buffer) => {
    output += chunk.toString('utf8');
    for (const listener of listeners) listener();
  };
  child.stdout?.on('data', append);
  child.stderr?.on('data', append);
  let done = false;
  // 'close', not 'exit': only then has everything the daemon wrote reached `output`.
  const exited = new Promise<number | null>((resolve) => child.once('close', (code) => {
    done = true;
    for (const listener of listeners) listener();
    resolve(code);
  }));
  const kill = () => child.kill('SIGKILL');
  process.once('exit', kill);
  return {
    child,
    pid: child.pid ?? -1,
    log: () => output,
    entries: () => parseJsonLines(output),
    waitForLog(test, ms = 60_000) {
      return new Promise<void>((resolve, reject) => {
        const check = () => {
          if (test(output)) finish(undefined);
          else if (done) finish(new Error(`process exited before the expected output:\n${output}`));
        };
        const timer = setTimeout(() => finish(new Error(`expected output did not appear in ${ms} ms:\n${output}`)), ms);
        const finish = (err: Error | undefined) => {
          clearTimeout(timer);
          listeners.delete(check);
          if (err === undefined) resolve();
          else reject(err);
        };
        listeners.add(check);
        check();
      });
    },
    async stop(signal = 'SIGTERM') {
      if (!done) child.kill(signal);
      const timer = setTimeout(kill, 60_000);
      const code = await exited;
      clearTimeout(timer);
      process.off('exit', kill);
      return code;
    },
    exited,
  };
}

export function parseJsonLines(text: string): Array<Record<string, unknown>> {
  const out: Array<Record<string, unknown>> = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      out.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      // a line cut in the middle of a write: the next read completes it
    }
  }
  return out;
}

export const daemonIsReady = (log: string) => log.includes('"message":"portcullisd ready"');

/** One datagram as the receiver got it: its text and the receiver's CLOCK_MONOTONIC in seconds. */
export interface Datagram {
  state: string;
  at: number;
}

/*
 * Node cannot bind a unix datagram socket, so systemd's end is Debian's
 * python: it binds, says so, and prints every datagram as one JSON line with
 * the time it arrived on its own monotonic clock.
 */
const receiverScript = `
import json, socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
print(json.dumps({"bound": True}), flush=True)
while True:
    data = s.recv(65536)
    print(json.dumps({"at": time.monotonic(), "state": data.decode("utf-8", "replace")}), flush=True)
`;

export interface NotifyReceiver {
  readonly path: string;
  /** Every datagram so far, in arrival order. */
  readonly received: Datagram[];
  /** Resolves with the first datagram at index >= `from` that passes `test`; rejects after `ms`. */
  waitFor(test: (d: Datagram) => boolean, from?: number, ms?: number): Promise<{ datagram: Datagram; index: number }>;
  /**
   * Sends a marker datagram from this process and waits for it: every
   * datagram sent before it (by anyone) has then been received, as the
   * socket queue is first in, first out.
   */
  flush(): Promise<void>;
  close(): Promise<void>;
}

export async function startNotifyReceiver(path: string): Promise<NotifyReceiver> {
  const python = spawn('/usr/bin/python3', ['-c', receiverScript, path], { stdio: ['ignore', 'pipe', 'inherit'] });
  const closed = new Promise<void>((resolve) => python.once('close', () => resolve()));
  const received: Datagram[] = [];
  const listeners = new Set<() => void>();
  let bound: () => void = () => undefined;
  const isBound = new Promise<void>((resolve) => (bound = resolve));
  createInterface({ input: python.stdout }).on('line', (line) => {
    const parsed = JSON.parse(line) as { bound?: boolean; at?: number; state?: string };
    if (parsed.bound === true) bound();
    else received.push({ at: parsed.at ?? 0, state: parsed.state ?? '' });
    for (const listener of listeners) listener();
  });
  const bindTimer = setTimeout(() => python.kill(), 30_000);
  await Promise.race([isBound, closed.then(() => Promise.reject(new Error(`notify receiver could not bind ${path}`)))]);
  clearTimeout(bindTimer);
  let markers = 0;

  const waitFor: NotifyReceiver['waitFor'] = (test, from = 0, ms = 60_000) =>
    new Promise((resolve, reject) => {
      const check = () => {
        const index = received.findIndex((d, i) => i >= from && test(d));
        const datagram = received[index];
        if (datagram !== undefined) finish(() => resolve({ datagram, index }));
      };
      const timer = setTimeout(() => finish(() => reject(new Error(`no such datagram in ${ms} ms; received: ${JSON.stringify(received.map((d) => d.state))}`))), ms);
      const finish = (settle: () => void) => {
        clearTimeout(timer);
        listeners.delete(check);
        settle();
      };
      listeners.add(check);
      check();
    });

  return {
    path,
    received,
    waitFor,
    async flush() {
      const marker = `X_TEST_MARKER=${++markers}`;
      const saved = process.env.NOTIFY_SOCKET;
      process.env.NOTIFY_SOCKET = path;
      try {
        notify(marker);
      } finally {
        if (saved === undefined) delete process.env.NOTIFY_SOCKET;
        else process.env.NOTIFY_SOCKET = saved;
      }
      await waitFor((d) => d.state === marker);
    },
    async close() {
      python.kill();
      await closed;
    },
  };
}

/** The one-letter state of a process from /proc/PID/stat ("T" when stopped). */
export function processState(pid: number): string {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return /^\d+ \(.*\) (\S)/s.exec(stat)?.[1] ?? '?';
}
