/**
 * An sd_notify receiver for benches: a unix datagram socket at a path, as
 * systemd's NOTIFY_SOCKET. Node has no unix datagram sockets, so Debian's
 * python3 holds it and prints each datagram's arrival on CLOCK_MONOTONIC,
 * the clock process.hrtime() reads too: start-to-READY is measured from the
 * spawn to the moment the datagram arrived, not to when we read the line.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';

const script = `
import os, socket, sys, time
path = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
print("listening", flush=True)
while True:
    data = s.recv(4096)
    t = time.monotonic_ns()
    print(t, data.decode("utf-8", "replace").replace("\\n", "|"), flush=True)
`;

export interface NotifyListener {
  readonly path: string;
  /** Resolves with the arrival time (hrtime ns) of the next datagram containing `state` that arrives after `after`. */
  next(state: string, after: bigint, timeoutMs: number): Promise<bigint>;
  stop(): void;
}

export async function startNotifyListener(path: string): Promise<NotifyListener> {
  const child: ChildProcess = spawn('/usr/bin/python3', ['-c', script, path], { stdio: ['ignore', 'pipe', 'inherit'] });
  const seen: Array<{ t: bigint; text: string }> = [];
  const waiters = new Set<() => void>();
  const lines = createInterface({ input: child.stdout ?? process.stdin });
  const listening = new Promise<void>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`notify listener exited ${String(code)}`)));
    lines.on('line', (line) => {
      if (line === 'listening') return resolve();
      const space = line.indexOf(' ');
      seen.push({ t: BigInt(line.slice(0, space)), text: line.slice(space + 1) });
      for (const w of waiters) w();
    });
  });
  await listening;
  return {
    path,
    next(state, after, timeoutMs) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const hit = seen.find((s) => s.t > after && s.text.split('|').includes(state));
          if (hit === undefined) return;
          clearTimeout(timer);
          waiters.delete(check);
          resolve(hit.t);
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`no ${state} within ${timeoutMs} ms`));
        }, timeoutMs);
        waiters.add(check);
        check();
      });
    },
    stop: () => void child.kill('SIGTERM'),
  };
}
