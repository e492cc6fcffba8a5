import { VmError } from './errors.js';

/**
 * The one interface privileged code and its tests run commands through. A
 * LocalRunner spawns on this host (production, and "direct mode" on a host
 * with dm-crypt); a Vm runs the same argv inside the qemu guest; a channel
 * client runs it through a broker that owns a shared Vm. The LUKS driver takes
 * any of them, the way os-brick's tests inject an executor.
 *
 * The shape is deliberately small and structural so src/luks can declare the
 * same interface without importing from test/.
 */
export interface RunOptions {
  /** Bytes written to the command's stdin, then stdin is closed (keys go to cryptsetup this way, never in argv). @default empty */
  stdin?: Uint8Array;
  /** Kill the command's whole process group after this long and report `timedOut`. @default 60000 */
  timeoutMs?: number;
  /** Working directory. @default the runner's own */
  cwd?: string;
  /** Variables added to the runner's environment. */
  env?: Readonly<Record<string, string>>;
  /** stdout and stderr together may not exceed this; past it the command is killed and the run rejects. @default 16 MiB */
  maxOutputBytes?: number;
}

export interface RunResult {
  /** Exit status, or null when a signal ended the command. */
  code: number | null;
  /** Signal that ended the command (SIGKILL after a timeout), else null. */
  signal: string | null;
  stdout: Buffer;
  stderr: Buffer;
  /** True when the timeout killed the command. */
  timedOut: boolean;
}

export interface CommandRunner {
  /** Where commands run, for messages: "local 6.1.0-56-amd64", "vm 6.1.0-56-amd64". */
  readonly where: string;
  /**
   * Runs argv (no shell) and resolves with its exit status and output, also
   * for a non-zero exit or a timeout.
   * @throws VmError E_RUN_SPAWN when argv[0] cannot be started, E_RUN_OUTPUT_LIMIT,
   *   E_RUN_ARGUMENT, and for remote runners E_VM_CHANNEL / E_VM_STOPPED.
   */
  run(argv: readonly string[], options?: RunOptions): Promise<RunResult>;
  /**
   * Runs a device operation beside the commands (the guest agent serves
   * src/luks/device/ops.ts); absent where the runner serves commands only.
   * @throws VmError E_OP_FAILED (details.errno), E_VM_CHANNEL, E_VM_STOPPED
   */
  op?(name: string, args: unknown[]): Promise<OpAnswer>;
}

/** A device operation's answer: JSON, or bytes for a read. */
export interface OpAnswer {
  json: unknown;
  body: Buffer;
}

export const DEFAULT_TIMEOUT_MS = 60_000;
export const DEFAULT_MAX_OUTPUT_BYTES = 16 * 1024 * 1024;
/** No single command in a test needs more than an hour; a bigger number is a bug. */
export const MAX_TIMEOUT_MS = 3_600_000;

/** RunOptions with defaults applied and checked, as they travel over a channel. */
export interface NormalizedRun {
  argv: string[];
  stdin: Buffer;
  timeoutMs: number;
  cwd: string | undefined;
  env: Record<string, string> | undefined;
  maxOutputBytes: number;
}

/**
 * Checks argv and options once, before anything is spawned or sent, so every
 * runner refuses the same bad input the same way.
 * @throws VmError E_RUN_ARGUMENT
 */
export function normalizeRun(argv: readonly string[], options: RunOptions = {}): NormalizedRun {
  if (argv.length === 0 || argv[0] === '') throw new VmError('E_RUN_ARGUMENT', 'Cannot run an empty argv, refusing');
  for (const arg of argv) {
    if (typeof arg !== 'string' || arg.includes('\0')) {
      throw new VmError('E_RUN_ARGUMENT', `Argument ${JSON.stringify(arg)} is not a string without NUL bytes, refusing`);
    }
  }
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  if (!Number.isInteger(timeoutMs) || timeoutMs <= 0 || timeoutMs > MAX_TIMEOUT_MS) {
    throw new VmError('E_RUN_ARGUMENT', `timeoutMs ${timeoutMs} is not an integer in 1..${MAX_TIMEOUT_MS}, refusing`);
  }
  const maxOutputBytes = options.maxOutputBytes ?? DEFAULT_MAX_OUTPUT_BYTES;
  if (!Number.isInteger(maxOutputBytes) || maxOutputBytes < 0) {
    throw new VmError('E_RUN_ARGUMENT', `maxOutputBytes ${maxOutputBytes} is not a non-negative integer, refusing`);
  }
  return {
    argv: [...argv],
    stdin: options.stdin === undefined ? Buffer.alloc(0) : Buffer.from(options.stdin.buffer, options.stdin.byteOffset, options.stdin.byteLength),
    timeoutMs,
    cwd: options.cwd,
    env: options.env === undefined ? undefined : { ...options.env },
    maxOutputBytes,
  };
}
