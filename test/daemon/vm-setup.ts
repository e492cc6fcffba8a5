/**
 * What the daemon's VM tests share: a kernel with dm-crypt (the test VM, or
 * this host in direct mode), loop devices over files beside it, and real
 * portcullisd processes whose privileged commands reach that kernel through
 * the harness broker.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before } from 'node:test';
import { startDaemonProcess, type Answer, type DaemonProcess, type StartOptions } from '../fixtures/daemon.js';
import { privilegedRunner, serveRunner, type Broker, type PrivilegedRunner } from '../vm/index.js';
import type { CommandRunner } from '../vm/runner.js';

export interface DaemonKernel {
  runner: PrivilegedRunner;
  /** Runs a shell script beside the kernel; asserts exit 0 and returns stdout. */
  sh(script: string): Promise<string>;
  /** A fresh loop device over a zeroed file of `mib` MiB. */
  loopDevice(mib?: number): Promise<string>;
  /** `count` fresh loop devices of `mib` MiB, made in one command. */
  loopDevices(count: number, mib?: number): Promise<string[]>;
  /** sha256 of the first `bytes` of a device. */
  sha(dev: string, bytes?: number): Promise<string>;
  /** A daemon whose commands and device operations go through `through` (a counting runner) to this kernel, when given. */
  daemon(options: StartOptions, through?: CommandRunner): Promise<DaemonProcess>;
  /** Stops daemons, closes mappings, detaches loops, stops an own VM. Safe to call twice. */
  cleanup(): Promise<void>;
}

export async function daemonKernel(): Promise<DaemonKernel> {
  const runner = await privilegedRunner();
  let broker: Broker | undefined;
  let vmSocket: string | undefined;
  if (runner.mode === 'vm') {
    // The daemon is another process: share this file's VM with it through a broker.
    broker = await serveRunner(runner, join(mkdtempSync(join(tmpdir(), 'portcullis-broker-')), 'vm.sock'));
    vmSocket = broker.socketPath;
  } else if (runner.mode === 'shared-vm') {
    vmSocket = process.env['PORTCULLIS_VM_SOCKET'];
  }
  const sh = async (script: string): Promise<string> => {
    const result = await runner.run(['sh', '-c', script], { timeoutMs: 300_000 });
    assert.equal(result.code, 0, `sh -c '${script}' failed: ${result.stderr.toString()}`);
    return result.stdout.toString().trim();
  };
  const scratch = await sh(`mktemp -d ${runner.scratchDir}/daemon.XXXXXX`);
  const loops: string[] = [];
  const daemons: DaemonProcess[] = [];
  const brokers: Broker[] = [];
  let cleaning: Promise<void> | undefined;
  return {
    runner,
    sh,
    async loopDevice(mib = 16) {
      const file = `${scratch}/disk-${loops.length}-${randomBytes(4).toString('hex')}.img`;
      const dev = await sh(`truncate -s ${mib}M ${file} && losetup --find --show ${file}`);
      loops.push(dev);
      return dev;
    },
    async loopDevices(count, mib = 1) {
      const prefix = `${scratch}/many-${randomBytes(4).toString('hex')}`;
      const out = await sh(`for i in $(seq 1 ${count}); do truncate -s ${mib}M ${prefix}-$i.img && losetup --find --show ${prefix}-$i.img || exit 1; done`);
      const devs = out.split('\n').filter((l) => l !== '');
      loops.push(...devs);
      return devs;
    },
    sha: (dev, bytes = 1024 * 1024) => sh(`head -c ${bytes} ${dev} | sha256sum | cut -d' ' -f1`),
    async daemon(options, through) {
      let socket = vmSocket;
      if (through !== undefined) {
        const own = await serveRunner(through, join(mkdtempSync(join(tmpdir(), 'portcullis-broker-')), 'vm.sock'));
        brokers.push(own);
        socket = own.socketPath;
      }
      const d = await startDaemonProcess({ ...options, ...(socket === undefined ? {} : { vmSocket: socket }), readyTimeoutMs: 180_000 });
      daemons.push(d);
      return d;
    },
    cleanup() {
      cleaning ??= (async () => {
        for (const d of daemons) await d.stop().catch(() => undefined);
        // Leave the kernel as we found it: our mappings (named pd-*, ephemeral-pd*) first, then our loops.
        await runner.run(['sh', '-c', `for m in $(dmsetup ls --target crypt | cut -f1 | grep -E '^(pd-|ephemeral-pd)'); do umount /dev/mapper/$m 2>/dev/null; cryptsetup close $m; done; for l in ${loops.join(' ')}; do losetup -d $l; done; rm -rf ${scratch}`], { timeoutMs: 300_000 }).catch(() => undefined);
        for (const b of brokers) await b.close();
        await broker?.close();
        await runner.stop();
      })();
      return cleaning;
    },
  };
}

/** The answer's body, after asserting it is a 200. */
export function ok<T>(answer: Answer): T {
  assert.equal(answer.status, 200, `expected 200, got ${answer.status}: ${answer.text}`);
  return answer.body as T;
}

/** The error code of an error answer. */
export function code(answer: Answer): string {
  return (answer.body as { error?: { code: string } }).error?.code ?? `(status ${answer.status})`;
}

const cli = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

/** A portcullisd on the embedded local keystore, in a fresh directory, logging JSON at debug level with an audit file. */
export function localKeystoreDaemon(kernel: DaemonKernel, through?: CommandRunner): Promise<DaemonProcess> {
  const dir = mkdtempSync(join(tmpdir(), 'portcullisd-e2e-'));
  return kernel.daemon(
    {
      dir,
      config: {
        key_manager: { backend: 'local', local: { path: `${dir}/keystore.db`, kek_file: `${dir}/kek` } },
        log: { format: 'json', level: 'debug', audit_file: `${dir}/audit.log` },
      },
    },
    through,
  );
}

/** A key in the daemon's own keystore, created the way an operator would: with the CLI. */
export function createKeyIn(daemon: DaemonProcess, project: string, length = 512): string {
  const run = spawnSync(process.execPath, [cli, '--config', daemon.configPath, 'key', 'create', '--project', project, '--length', String(length)], { encoding: 'utf8' });
  assert.equal(run.status, 0, run.stderr);
  return run.stdout.trim();
}

/** A test file's kernel and local-keystore daemon, restartable on the same directory (keystore, records, socket). */
export interface FileDaemon {
  readonly kernel: DaemonKernel;
  readonly daemon: DaemonProcess;
  readonly dir: string;
  /** Stops the daemon, runs `whileStopped`, and starts another on the same directory with `env` added. */
  restart(options?: { env?: Record<string, string>; whileStopped?: () => void }): Promise<DaemonProcess>;
}

/** Starts the kernel and the daemon before the file's tests and cleans both up after them. */
export function fileDaemon(prefix: string): FileDaemon {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  const config = { key_manager: { backend: 'local', local: { path: `${dir}/keystore.db`, kek_file: `${dir}/kek` } }, log: { format: 'json' } };
  let kernel: DaemonKernel | undefined;
  let daemon: DaemonProcess | undefined;
  const started = <T>(value: T | undefined): T => {
    assert.ok(value !== undefined, 'the file daemon is started in before()');
    return value;
  };
  before(async () => {
    kernel = await daemonKernel();
    daemon = await kernel.daemon({ dir, config });
  });
  after(() => kernel?.cleanup());
  return {
    get kernel() {
      return started(kernel);
    },
    get daemon() {
      return started(daemon);
    },
    dir,
    async restart(options = {}) {
      await started(daemon).stop();
      options.whileStopped?.();
      daemon = await started(kernel).daemon({ dir, config, ...(options.env === undefined ? {} : { env: options.env }) });
      return daemon;
    },
  };
}
