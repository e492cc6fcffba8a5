import { spawn } from 'node:child_process';

/**
 * How privileged commands run: directly on a host with device-mapper, or in
 * the test VM over its command channel (test/vm) — the same split as
 * os-brick's privsep helper. Argv is always an array (no shell), and secrets
 * only ever travel in `stdin`.
 */
export interface RunOptions {
  stdin?: Uint8Array;
  timeoutMs?: number;
}

export interface RunResult {
  /** Exit code, or null when killed by a signal. */
  code: number | null;
  signal?: string | null;
  /** True when the runner killed the command at its timeout. */
  timedOut?: boolean;
  /** True when the killed command had still not exited well after its timeout (a process in D state). */
  stuck?: boolean;
  stdout: Buffer;
  stderr: Buffer;
}

export interface CommandRunner {
  run(argv: readonly string[], options?: RunOptions): Promise<RunResult>;
}

const MAX_OUTPUT = 16 * 1024 * 1024;

/** Runs commands on this host with child_process.spawn. */
export function localRunner(env: NodeJS.ProcessEnv = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' }): CommandRunner {
  return {
    run(argv, options = {}) {
      return new Promise((resolve, reject) => {
        const [file, ...args] = argv;
        if (file === undefined) {
          reject(new Error('empty argv'));
          return;
        }
        // A fixed, minimal environment: nothing of ours (and no secret) leaks into the child.
        const child = spawn(file, args, { env, stdio: ['pipe', 'pipe', 'pipe'] });
        const out: Buffer[] = [];
        const err: Buffer[] = [];
        let size = 0;
        let timedOut = false;
        const collect = (into: Buffer[]) => (chunk: Buffer) => {
          size += chunk.length;
          if (size <= MAX_OUTPUT) into.push(chunk);
        };
        child.stdout.on('data', collect(out));
        child.stderr.on('data', collect(err));
        const timer =
          options.timeoutMs === undefined
            ? undefined
            : setTimeout(() => {
                timedOut = true;
                child.kill('SIGKILL');
              }, options.timeoutMs);
        child.on('error', (e) => {
          if (timer) clearTimeout(timer);
          reject(e);
        });
        child.on('close', (code, signal) => {
          if (timer) clearTimeout(timer);
          resolve({
            code,
            ...(signal === null ? {} : { signal }),
            ...(timedOut ? { timedOut } : {}),
            stdout: Buffer.concat(out),
            stderr: Buffer.concat(err),
          });
        });
        // EPIPE when the child exits without reading stdin (e.g. bad arguments) is not our failure.
        child.stdin.on('error', () => undefined);
        child.stdin.end(options.stdin ?? Buffer.alloc(0));
      });
    },
  };
}
