import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { VmError } from './errors.js';
import { GUEST_FAIL_MARK } from './guest-init.js';
import { ConsoleTail, prepareBoot, shQuote, spawnQemu, writeGuestScript, type MachineOptions } from './qemu.js';

export interface ConsoleRunOptions extends MachineOptions {
  /** Directory in the guest (a host path: the guest sees the host's tree). @default process.cwd() */
  cwd?: string;
  /** Variables for the command, on top of the guest's minimal PATH/HOME/LANG. */
  env?: Readonly<Record<string, string>>;
  /** Until the command starts. @default 180000 */
  bootTimeoutMs?: number;
  /** For the whole run, boot included; then qemu is killed. @default 1800000 */
  timeoutMs?: number;
  /** Each complete line the command prints (stdout and stderr merged, as the serial console carries them). */
  onLine?: (line: string) => void;
}

export interface ConsoleRunResult {
  /** The command's exit status in the guest. */
  code: number;
  /** Milliseconds from starting qemu to the command starting. */
  bootMs: number;
  /** Milliseconds the command ran. */
  runMs: number;
  /** Everything the command printed. */
  output: string;
}

/**
 * Boots a VM that runs one command on its serial console and powers off: the
 * "one boot per batch" mode, e.g. `node --test` over compiled test files in
 * the guest. The command's status comes back as a sentinel line carrying a
 * per-run nonce, so output that happens to contain the marker cannot fake it.
 * @throws VmError E_VM_MISSING, E_VM_BOOT, E_VM_TIMEOUT, E_VM_CHANNEL (guest ended without a status)
 */
export async function runInVmConsole(argv: readonly string[], options: ConsoleRunOptions = {}): Promise<ConsoleRunResult> {
  if (argv.length === 0) throw new VmError('E_RUN_ARGUMENT', 'Cannot run an empty argv in the VM, refusing');
  const prepared = prepareBoot(options.log);
  const nonce = randomBytes(8).toString('hex');
  const start = `PORTCULLIS-VM-START ${nonce}`;
  const exitMark = `PORTCULLIS-VM-EXIT ${nonce} `;
  const exports = Object.entries(options.env ?? {}).map(([k, v]) => {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) throw new VmError('E_RUN_ARGUMENT', `Environment name ${JSON.stringify(k)} is not valid, refusing`);
    return `export ${k}=${shQuote(v)}\n`;
  });
  const script = writeGuestScript(
    `cd ${shQuote(options.cwd ?? process.cwd())} || exit 125\n${exports.join('')}echo ${shQuote(start)}\n` +
      `${argv.map(shQuote).join(' ')} </dev/null 2>&1\necho "${exitMark}$?"\n`,
  );
  const started = Date.now();
  const child = spawnQemu(prepared, script, [], options);
  const tail = new ConsoleTail();
  const output: string[] = [];
  let partial = '';
  let startedAt: number | undefined;
  let code: number | undefined;
  let endedAt = 0;
  const onLine = (raw: string): void => {
    const line = raw.replace(/\r$/, '');
    if (startedAt === undefined) {
      if (line.endsWith(start)) startedAt = Date.now();
      return;
    }
    if (code !== undefined) return;
    if (line.startsWith(exitMark)) {
      code = Number(line.slice(exitMark.length));
      endedAt = Date.now();
      return;
    }
    output.push(line);
    options.onLine?.(line);
  };
  const onText = (text: string): void => {
    tail.push(text);
    options.onConsole?.(text);
    const lines = (partial + text).split('\n');
    partial = lines.pop() ?? '';
    lines.forEach(onLine);
  };
  child.stdout?.setEncoding('utf8');
  child.stdout?.on('data', onText);
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (t: string) => tail.push(t));
  const killOnExit = (): void => {
    child.kill('SIGKILL');
  };
  process.once('exit', killOnExit);

  const bootTimeoutMs = options.bootTimeoutMs ?? 180_000;
  const timeoutMs = options.timeoutMs ?? 1_800_000;
  let failure: VmError | undefined;
  const bootTimer = setTimeout(() => {
    if (startedAt !== undefined) return;
    failure = new VmError('E_VM_BOOT', `The VM did not start the command within ${bootTimeoutMs} ms\n${tailLines(tail)}`);
    child.kill('SIGKILL');
  }, bootTimeoutMs);
  const runTimer = setTimeout(() => {
    failure = new VmError('E_VM_TIMEOUT', `${argv.join(' ')} did not finish in the VM within ${timeoutMs} ms; killed the VM\n${tailLines(tail)}`);
    child.kill('SIGKILL');
  }, timeoutMs);
  await new Promise<void>((resolve) => child.once('close', () => resolve()));
  clearTimeout(bootTimer);
  clearTimeout(runTimer);
  process.removeListener('exit', killOnExit);
  rmSync(script, { force: true });
  if (partial !== '') onLine(partial);

  if (failure !== undefined) throw failure;
  if (startedAt === undefined) {
    const failLine = tail.toString().split('\n').find((l) => l.startsWith(GUEST_FAIL_MARK));
    throw new VmError('E_VM_BOOT', `The VM did not come up${failLine === undefined ? '' : `: ${failLine}`} (qemu status ${child.exitCode ?? child.signalCode})\n${tailLines(tail)}`);
  }
  if (code === undefined || !Number.isInteger(code)) {
    throw new VmError('E_VM_CHANNEL', `The guest stopped without reporting ${argv[0]}'s exit status\n${tailLines(tail)}`);
  }
  return { code, bootMs: startedAt - started, runMs: endedAt - startedAt, output: output.join('\n') };
}

const tailLines = (tail: ConsoleTail): string => `--- console (last lines) ---\n${tail.toString().split('\n').slice(-25).join('\n')}`;
