import { spawn } from 'node:child_process';
import { release } from 'node:os';
import { VmError } from './errors.js';
import { normalizeRun, type CommandRunner, type RunOptions, type RunResult } from './runner.js';

/**
 * Spawns commands on this machine: the guest agent uses it inside the VM, and
 * direct mode uses it on a host that has dm-crypt.
 */
export class LocalRunner implements CommandRunner {
  /** @param where how messages name this machine @default "local <uname -r>" */
  constructor(readonly where = `local ${release()}`) {}

  run(argv: readonly string[], options: RunOptions = {}): Promise<RunResult> {
    let run;
    try {
      run = normalizeRun(argv, options);
    } catch (err) {
      return Promise.reject(err);
    }
    const { timeoutMs, maxOutputBytes } = run;
    return new Promise((resolve, reject) => {
      // Its own process group, so a timeout kills what the command started too
      // (a shell's children), not only the direct child.
      const child = spawn(run.argv[0] as string, run.argv.slice(1), {
        cwd: run.cwd,
        env: run.env === undefined ? process.env : { ...process.env, ...run.env },
        stdio: ['pipe', 'pipe', 'pipe'],
        detached: true,
      });
      const stdout: Buffer[] = [];
      const stderr: Buffer[] = [];
      let total = 0;
      let timedOut = false;
      let overLimit = false;
      let spawnError: Error | undefined;
      const killGroup = (): void => {
        if (child.pid === undefined) return;
        try {
          process.kill(-child.pid, 'SIGKILL');
        } catch {
          // The group is already gone: nothing left to kill.
        }
      };
      const timer = setTimeout(() => {
        timedOut = true;
        killGroup();
      }, timeoutMs);
      const collect = (into: Buffer[]) => (chunk: Buffer) => {
        total += chunk.length;
        if (total > maxOutputBytes) {
          if (!overLimit) killGroup();
          overLimit = true;
          return;
        }
        into.push(chunk);
      };
      child.stdout.on('data', collect(stdout));
      child.stderr.on('data', collect(stderr));
      // EPIPE when the command exits without reading all of its stdin; its exit status says what happened.
      child.stdin.on('error', () => {});
      child.stdin.end(run.stdin);
      child.on('error', (err) => {
        spawnError = err;
      });
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        if (spawnError !== undefined && child.pid === undefined) {
          const errno = (spawnError as NodeJS.ErrnoException).code ?? 'unknown';
          reject(new VmError('E_RUN_SPAWN', `Cannot start ${JSON.stringify(run.argv[0])} (${errno}) on ${this.where}`, {
            details: { argv0: run.argv[0], errno },
            cause: spawnError,
          }));
          return;
        }
        if (overLimit) {
          reject(new VmError('E_RUN_OUTPUT_LIMIT', `${JSON.stringify(run.argv[0])} wrote more than ${maxOutputBytes} bytes and was killed`, {
            details: { argv0: run.argv[0], maxOutputBytes },
          }));
          return;
        }
        resolve({ code, signal, stdout: Buffer.concat(stdout), stderr: Buffer.concat(stderr), timedOut });
      });
    });
  }
}
