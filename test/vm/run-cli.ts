/**
 * `node scripts/vm-run.mjs [options] -- ARGV...` boots a VM, runs ARGV in the
 * guest (cwd: this checkout, which the guest sees at the same path), prints
 * its output and exits with its status. `--shell 'CMD'` runs `sh -c CMD`.
 */
import { UsageError, parseArgs, seconds } from './cli-args.js';
import { runInVmConsole } from './console-run.js';
import { VmError } from './errors.js';
import { repoRoot } from '../helpers/paths.js';

export const RUN_USAGE = `usage: node scripts/vm-run.mjs [--shell CMD] [--cwd DIR] [--env K=V]... [--timeout S] [--boot-timeout S] [--quiet] [-- ARGV...]
  Runs ARGV (or sh -c CMD) inside the qemu VM with dm-crypt and loop, prints its
  output and exits with its status; 125 when the VM itself failed.
  A leading "node" runs this host's node binary.`;

/** Exit status the harness uses for its own failures, as git bisect run does. */
export const HARNESS_FAILED = 125;

export async function main(argv: readonly string[]): Promise<number> {
  let args;
  try {
    args = parseArgs(argv, { shell: true, cwd: true, env: true, timeout: true, 'boot-timeout': true, quiet: false, help: false });
  } catch (err) {
    process.stderr.write(`vm-run: ${(err as Error).message}\n${RUN_USAGE}\n`);
    return 2;
  }
  if (args.options.has('help')) {
    process.stdout.write(`${RUN_USAGE}\n`);
    return 0;
  }
  const shell = args.options.get('shell')?.at(-1);
  let command = shell === undefined ? [...args.positionals] : ['sh', '-c', shell, ...args.positionals];
  if (command.length === 0) {
    process.stderr.write(`vm-run: nothing to run\n${RUN_USAGE}\n`);
    return 2;
  }
  // The guest's PATH may not have this node (nvm, a tarball): use the same binary.
  if (command[0] === 'node') command = [process.execPath, ...command.slice(1)];
  const env: Record<string, string> = {};
  for (const kv of args.options.get('env') ?? []) {
    const eq = kv.indexOf('=');
    if (eq <= 0) {
      process.stderr.write(`vm-run: --env ${JSON.stringify(kv)} is not K=V\n`);
      return 2;
    }
    env[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  const quiet = args.options.has('quiet');
  try {
    const result = await runInVmConsole(command, {
      cwd: args.options.get('cwd')?.at(-1) ?? repoRoot,
      env,
      timeoutMs: seconds(args, 'timeout', 1800),
      bootTimeoutMs: seconds(args, 'boot-timeout', 180),
      onLine: (line) => process.stdout.write(`${line}\n`),
      log: (line) => process.stderr.write(`vm-run: ${line}\n`),
    });
    if (!quiet) process.stderr.write(`vm-run: exit ${result.code}; boot ${result.bootMs} ms, run ${result.runMs} ms\n`);
    return result.code;
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`vm-run: ${err.message}\n`);
      return 2;
    }
    process.stderr.write(`vm-run: ${err instanceof VmError ? `${err.code}: ${err.message}` : String(err)}\n`);
    return HARNESS_FAILED;
  }
}
