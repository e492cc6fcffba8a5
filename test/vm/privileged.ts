import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { localDeviceOps, type DeviceOps } from '../../src/luks/device/ops.js';
import { connectRunner } from './broker.js';
import { remoteDeviceOps } from './device-ops.js';
import { VmError } from './errors.js';
import { GUEST_SCRATCH } from './guest-init.js';
import { LocalRunner } from './local-runner.js';
import type { CommandRunner, RunOptions, RunResult } from './runner.js';
import { startVm, type Vm, type VmOptions } from './vm.js';

/** Environment the suite script sets for the test processes it starts. */
export const ENV_SOCKET = 'PORTCULLIS_VM_SOCKET';
/** `direct` or `vm` forces a mode; unset picks direct where dm-crypt works. */
export const ENV_MODE = 'PORTCULLIS_PRIVILEGED';

export type PrivilegedMode = 'direct' | 'vm' | 'shared-vm';

/** What privileged tests get: a runner where dm-crypt and loop devices work. */
export interface PrivilegedRunner extends CommandRunner {
  readonly mode: PrivilegedMode;
  /** A writable directory beside that kernel for loop-device backing files. */
  readonly scratchDir: string;
  /** The device operations beside that kernel: in-process in direct mode, the guest agent's in the VM. */
  readonly ops: DeviceOps;
  /** The VM this process booted for itself (mode "vm"), for tests of the VM's own life cycle. */
  readonly vm: Vm | undefined;
  /** Releases what this process started (its own VM); a shared VM stays up for the suite. Safe to call twice. */
  stop(): Promise<void>;
}

/**
 * Whether this host can run the privileged suite itself: root, and a kernel
 * whose device-mapper answers (not just a /dev node left by a container).
 */
export function directModeAvailable(): boolean {
  if (process.getuid?.() !== 0 || !existsSync('/dev/mapper/control')) return false;
  const r = spawnSync('dmsetup', ['version'], { stdio: 'ignore', timeout: 10_000 });
  return r.status === 0;
}

/**
 * The runner privileged tests use, chosen in this order: the suite's shared VM
 * (PORTCULLIS_VM_SOCKET), direct mode (PORTCULLIS_PRIVILEGED=direct, or
 * automatically where dm-crypt works, e.g. inside the VM), else a VM of this
 * process's own, booted now.
 */
export async function privilegedRunner(options: VmOptions = {}): Promise<PrivilegedRunner> {
  const socket = process.env[ENV_SOCKET];
  const mode = process.env[ENV_MODE];
  if (mode !== undefined && mode !== 'direct' && mode !== 'vm') {
    throw new VmError('E_RUN_ARGUMENT', `${ENV_MODE}=${JSON.stringify(mode)} is neither "direct" nor "vm", refusing`);
  }
  if (socket !== undefined && socket !== '') {
    const client = await connectRunner(socket);
    return wrap('shared-vm', client, GUEST_SCRATCH, async () => client.close(), undefined);
  }
  if (mode === 'direct' || (mode === undefined && directModeAvailable())) {
    return wrap('direct', new LocalRunner(), tmpdir(), async () => {}, undefined);
  }
  const vm = await startVm(options);
  return wrap('vm', vm, vm.scratchDir, () => vm.stop(), vm);
}

function wrap(mode: PrivilegedMode, runner: CommandRunner, scratchDir: string, stop: () => Promise<void>, vm: Vm | undefined): PrivilegedRunner {
  let stopping: Promise<void> | undefined;
  return {
    mode,
    scratchDir,
    vm,
    ops: mode === 'direct' ? localDeviceOps(runner) : remoteDeviceOps(runner),
    where: runner.where,
    run: (argv: readonly string[], options?: RunOptions): Promise<RunResult> => runner.run(argv, options),
    ...(runner.op === undefined ? {} : { op: (name: string, args: unknown[]) => (runner.op as NonNullable<CommandRunner['op']>)(name, args) }),
    stop: () => (stopping ??= stop()),
  };
}
