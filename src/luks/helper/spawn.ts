import { spawn } from 'node:child_process';
import type { Duplex } from 'node:stream';
import { createInterface } from 'node:readline';
import { streamTransport, type HelperTransport } from './transport.js';

/**
 * Starts the privileged helper as a child of this (still privileged)
 * process, on a socketpair at its descriptor 3: the daemon keeps the other
 * end and may then give up root. The helper exits when that end closes, so
 * it never outlives the daemon. Its stderr is one JSON object per line
 * (never a key), passed to `log`.
 */
export interface SpawnHelperOptions {
  /** The helper binary (installed: /usr/lib/portcullis/portcullis-helper). */
  path: string;
  /** Directories where os-brick's attachment symlinks may be pointed. */
  symlinkDirs: readonly string[];
  log: (line: string) => void;
}

export function spawnHelper(options: SpawnHelperOptions): HelperTransport {
  const args = ['--fd', '3', ...options.symlinkDirs.flatMap((d) => ['--symlink-dir', d])];
  const child = spawn(options.path, args, {
    stdio: ['ignore', 'ignore', 'pipe', 'pipe'],
    env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' },
  });
  const stream = child.stdio[3] as Duplex | null;
  if (stream === null) throw new Error('the helper was started without its socket');
  const where = `portcullis-helper pid ${child.pid ?? '?'}`;
  if (child.stderr !== null) createInterface({ input: child.stderr }).on('line', (line) => options.log(line));
  child.on('error', (err) => {
    options.log(JSON.stringify({ event: 'helper_start_failed', path: options.path, error: err.message }));
    stream.destroy();
  });
  child.on('exit', (code, signal) => options.log(JSON.stringify({ event: 'helper_exit', pid: child.pid, code, signal })));
  // The helper's exit must not keep the daemon alive, nor the daemon's keep it (it exits on hang-up).
  child.unref();
  return streamTransport(stream, where);
}
