import { luksError, type LuksErrorCode } from '../errors.js';
import type { CommandRunner, RunResult } from './runner.js';

export interface ExecContext {
  runner: CommandRunner;
  /** Per command. */
  timeoutMs: number;
}

/** cryptsetup's documented exit codes. */
const exitCodes: Record<number, LuksErrorCode> = {
  1: 'E_CRYPTSETUP_PARAMS',
  2: 'E_WRONG_KEY',
  3: 'E_CRYPTSETUP_NOMEM',
  4: 'E_DEVICE_WRONG',
  5: 'E_DEVICE_BUSY',
};

/**
 * libdevmapper's words when the kernel has no device-mapper (no dm_mod, a
 * container without /dev/mapper/control): cryptsetup then exits 1, the code
 * it also uses for bad parameters. The host is at fault, not the request.
 */
const DM_UNAVAILABLE = /Cannot initiali[sz]e device-mapper/i;

/** The code of a cryptsetup failure from its exit code and stderr; undefined for an exit code it does not document. */
export function cryptsetupFailureCode(exitCode: number, stderr: string): LuksErrorCode | undefined {
  if (exitCode === 1 && DM_UNAVAILABLE.test(stderr)) return 'E_DM_UNAVAILABLE';
  return exitCodes[exitCode];
}

export interface ExecOptions {
  stdin?: Buffer;
  /** Exit codes that are not failures for this call (returned to the caller to interpret). */
  ok?: readonly number[];
  /** For messages: what we were doing ("open /dev/vdb as vol-1"). */
  what: string;
}

/**
 * Runs one command (cryptsetup, blkid, dmsetup...) and turns its failure into
 * a typed error that quotes its stderr — never its stdin, which may be a key.
 */
export async function exec(ctx: ExecContext, argv: readonly string[], options: ExecOptions): Promise<RunResult> {
  let result: RunResult;
  try {
    result = await ctx.runner.run(argv, { ...(options.stdin === undefined ? {} : { stdin: options.stdin }), timeoutMs: ctx.timeoutMs });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const hint = code === 'ENOENT' ? `; is ${argv[0]} installed (Debian: cryptsetup-bin, dmsetup, util-linux)?` : '';
    throw luksError('E_CRYPTSETUP_FAILED', `Could not run ${argv[0]} to ${options.what} (${code ?? String(err)})${hint}`, { cause: err, details: { command: argv[0] } });
  }
  if (result.timedOut === true) {
    const stuck = result.stuck === true ? '; it has not exited since (stuck in uninterruptible I/O: check the device and dmesg)' : '';
    throw luksError('E_CRYPTSETUP_TIMEOUT', `${argv[0]} did not finish within ${ctx.timeoutMs} ms (${options.what}); killed it${stuck}`, {
      details: { command: argv[0], timeoutMs: ctx.timeoutMs, stuck: result.stuck === true },
    });
  }
  if (result.code === 0 || (result.code !== null && options.ok?.includes(result.code))) return result;
  const stderr = result.stderr.toString('utf8').trim().slice(0, 2000);
  const mapped = argv[0] === 'cryptsetup' && result.code !== null ? cryptsetupFailureCode(result.code, stderr) : undefined;
  const reason = result.code === null ? `was killed by ${result.signal ?? 'a signal'}` : `exited ${result.code}`;
  throw luksError(mapped ?? 'E_CRYPTSETUP_FAILED', `${argv[0]} ${reason} trying to ${options.what}${stderr === '' ? '' : `: ${stderr}`}`, {
    details: { command: argv[0], exitCode: result.code, stderr },
  });
}
