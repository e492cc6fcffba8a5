/**
 * `node scripts/vm-suite.mjs [--mode auto|vm|direct|in-guest] [FILTER...]`
 * runs the privileged suite: every compiled `*.vm.test.js` of this build.
 *
 * - vm (the default where this host lacks dm-crypt): one VM for the whole
 *   suite; node --test and the test code run on the host, and only the
 *   commands (cryptsetup, losetup, ...) run in the guest, through a broker
 *   socket the test processes share (PORTCULLIS_VM_SOCKET).
 * - direct (the default on a host with dm-crypt, as root): no VM at all.
 * - in-guest: one VM boot that runs node --test itself in the guest, in direct
 *   mode there (kept for comparison and for tests that must run beside the
 *   kernel).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { repoRoot } from '../helpers/paths.js';
import { serveRunner } from './broker.js';
import { UsageError, parseArgs, seconds } from './cli-args.js';
import { runInVmConsole } from './console-run.js';
import { VmError } from './errors.js';
import { ENV_MODE, ENV_SOCKET, directModeAvailable } from './privileged.js';
import { HARNESS_FAILED } from './run-cli.js';
import { startVm } from './vm.js';

export const SUITE_USAGE = `usage: node scripts/vm-suite.mjs [--mode auto|vm|direct|in-guest] [--timeout S] [--list] [FILTER...]
  Runs every compiled *.vm.test.js (whose path contains a FILTER, if given)
  against a kernel with dm-crypt: this host's (direct) or the qemu VM's.`;

/** The build's output root: this file is <out>/test/vm/suite-cli.js. */
const buildRoot = fileURLToPath(new URL('../..', import.meta.url));

function walk(dir: string): string[] {
  return readdirSync(dir).flatMap((entry) => {
    const path = join(dir, entry);
    return statSync(path).isDirectory() ? walk(path) : [path];
  });
}

/**
 * Left out of the suite: files that boot a guest of their own whatever the
 * mode (test/systemd's whole-system tests need systemd as the guest's PID 1,
 * which no shared VM, host or in-guest run offers); `make test` runs them.
 */
const OWN_GUEST_DIRS = ['systemd/'];

export function suiteFiles(filters: readonly string[]): string[] {
  const testRoot = join(buildRoot, 'test');
  return walk(testRoot)
    .filter((f) => f.endsWith('.vm.test.js'))
    .filter((f) => !OWN_GUEST_DIRS.some((d) => relative(testRoot, f).startsWith(d)))
    .filter((f) => filters.length === 0 || filters.some((needle) => relative(testRoot, f).includes(needle)))
    .sort();
}

function nodeTestArgs(files: readonly string[]): string[] {
  // Files spend their time waiting on the guest, so two at once even on 2 cores.
  const concurrency = process.env.TEST_CONCURRENCY ?? '2';
  return ['--test', '--test-reporter=spec', `--test-concurrency=${concurrency}`, '--test-timeout=600000', ...files];
}

/** Runs node --test on the host; kills it past `timeoutMs` so the suite always ends. */
function runNodeTest(files: readonly string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, nodeTestArgs(files), { stdio: 'inherit', cwd: repoRoot, env });
    const timer = setTimeout(() => {
      process.stderr.write(`vm-suite: the suite did not finish within ${timeoutMs} ms; killing it\n`);
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve(code ?? 1);
    });
  });
}

export async function main(argv: readonly string[]): Promise<number> {
  const log = (line: string): void => {
    process.stderr.write(`vm-suite: ${line}\n`);
  };
  let args;
  try {
    args = parseArgs(argv, { mode: true, timeout: true, list: false, help: false });
    const mode = args.options.get('mode')?.at(-1) ?? 'auto';
    if (!['auto', 'vm', 'direct', 'in-guest'].includes(mode)) throw new UsageError(`--mode ${JSON.stringify(mode)} is not auto, vm, direct or in-guest`);
    if (args.options.has('help')) {
      process.stdout.write(`${SUITE_USAGE}\n`);
      return 0;
    }
    const timeoutMs = seconds(args, 'timeout', 1800);
    const files = suiteFiles(args.positionals);
    if (files.length === 0) {
      log(`no *.vm.test.js files match ${args.positionals.join(' ') || '(all)'} under ${join(buildRoot, 'test')}; did the build run?`);
      return 1;
    }
    if (args.options.has('list')) {
      process.stdout.write(`${files.map((f) => relative(repoRoot, f)).join('\n')}\n`);
      return 0;
    }
    const started = Date.now();
    const chosen = mode === 'auto' ? (directModeAvailable() ? 'direct' : 'vm') : mode;
    log(`${files.length} file(s), mode ${chosen}`);
    let code: number;
    if (chosen === 'direct') {
      if (!directModeAvailable()) {
        log('direct mode needs root and a kernel with device-mapper (dmsetup version failed or /dev/mapper/control is missing)');
        return HARNESS_FAILED;
      }
      code = await runNodeTest(files, { ...process.env, [ENV_MODE]: 'direct' }, timeoutMs);
    } else if (chosen === 'in-guest') {
      const result = await runInVmConsole([process.execPath, ...nodeTestArgs(files)], {
        cwd: repoRoot,
        env: { [ENV_MODE]: 'direct', TEST_CONCURRENCY: process.env.TEST_CONCURRENCY ?? '1' },
        timeoutMs,
        onLine: (line) => process.stdout.write(`${line}\n`),
        log,
      });
      log(`VM boot ${result.bootMs} ms, node --test in the guest ${result.runMs} ms`);
      code = result.code;
    } else {
      const vm = await startVm({ log });
      log(`VM ${vm.kernel} up in ${vm.bootMs} ms (qemu pid ${vm.pid})`);
      const dir = mkdtempSync(join(tmpdir(), 'portcullis-vm-broker-'));
      const broker = await serveRunner(vm, join(dir, 'broker.sock'));
      try {
        code = await runNodeTest(files, { ...process.env, [ENV_SOCKET]: broker.socketPath }, timeoutMs);
      } finally {
        await broker.close();
        await vm.stop();
        rmSync(dir, { recursive: true, force: true });
      }
    }
    log(`exit ${code} after ${Date.now() - started} ms`);
    return code;
  } catch (err) {
    if (err instanceof UsageError) {
      log(`${err.message}\n${SUITE_USAGE}`);
      return 2;
    }
    log(err instanceof VmError ? `${err.code}: ${err.message}` : String(err));
    return HARNESS_FAILED;
  }
}
