import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ChannelClient } from './channel.js';
import { VmError } from './errors.js';
import { GUEST_FAIL_MARK, GUEST_SCRATCH } from './guest-init.js';
import { CHANNEL_PORT_NAME } from './protocol.js';
import { ConsoleTail, prepareBoot, shQuote, spawnQemu, writeGuestScript, type MachineOptions, type Prepared } from './qemu.js';
import type { CommandRunner, OpAnswer, RunOptions, RunResult } from './runner.js';

export interface VmOptions extends MachineOptions {
  /** From qemu's start until the guest agent says hello. TCG on a busy 2-core machine is slow. @default 180000 */
  bootTimeoutMs?: number;
}

/** A running guest whose commands run through the virtio-serial channel. */
export interface Vm extends CommandRunner {
  /** `uname -r` of the guest kernel. */
  readonly kernel: string;
  /** qemu's pid on the host. */
  readonly pid: number;
  /** Milliseconds from starting qemu to the agent's hello. */
  readonly bootMs: number;
  /** A fresh tmpfs in the guest for loop-device backing files. */
  readonly scratchDir: string;
  /** Settles when qemu has exited. */
  readonly exited: Promise<void>;
  /** Hangs up, waits for the guest to power off (killing qemu if it does not), cleans up. Safe to call twice. */
  stop(): Promise<void>;
  /** The serial console's last lines (for failure messages). */
  console(): string;
}

/** After hang-up the guest's init syncs and reboots; past this, qemu is killed. */
const STOP_GRACE_MS = 15_000;

const agentPath = fileURLToPath(new URL('./guest-agent.js', import.meta.url));

/**
 * Boots the VM with the guest agent and returns once it answers.
 * @throws VmError E_VM_MISSING (packages, kernel), E_VM_BOOT (with the console's tail)
 */
export function startVm(options: VmOptions = {}): Promise<Vm> {
  // Not --jitless: it starts `node -e 1` about as fast, but loading the agent's
  // modules took 1.7 s instead of 1.2 s in the guest (the ESM loader is JS-heavy).
  const script = writeGuestScript(`exec ${shQuote(process.execPath)} ${shQuote(agentPath)}\n`);
  return bootAgentVm({ prepared: prepareBoot(options.log), script }, options);
}

/** How a guest whose agent answers on the channel boots (startVm's, or systemd-vm.ts'). */
export interface AgentBoot {
  prepared: Prepared;
  /** The guest init's portcullis.script (removed with the VM). */
  script: string;
  /** More qemu arguments (disks). */
  extraArgs?: readonly string[];
  /** More kernel command line. */
  append?: string;
  /** After hang-up, how long the guest may take to power off before qemu is killed. @default 15000 */
  stopGraceMs?: number;
}

/** The agent's path in the guest, for a guest that starts it some other way (systemd-vm.ts). */
export const guestAgentPath = agentPath;

/**
 * Boots `boot` with the channel's port and returns once the agent says hello.
 * @throws VmError E_VM_BOOT (with the console's tail)
 */
export async function bootAgentVm(boot: AgentBoot, options: VmOptions = {}): Promise<Vm> {
  const { prepared, script } = boot;
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-vm-'));
  const socketPath = join(dir, 'channel.sock');
  // The host listens and qemu connects as a client at start-up, so the channel
  // is up before the guest can open its port: no polling for a socket file.
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, resolve);
  });
  const consoleTail = new ConsoleTail();
  const started = Date.now();
  const child = spawnQemu(prepared, script, [
    '-device', 'virtio-serial-pci',
    '-chardev', `socket,id=chan,path=${socketPath}`,
    '-device', `virtserialport,chardev=chan,name=${CHANNEL_PORT_NAME}`,
    ...(boot.extraArgs ?? []),
  ], options, boot.append);
  const onConsole = options.onConsole ?? (process.env.PORTCULLIS_VM_CONSOLE === '1' ? (t: string) => process.stderr.write(t) : undefined);
  for (const stream of [child.stdout, child.stderr]) {
    stream?.setEncoding('utf8');
    stream?.on('data', (t: string) => {
      consoleTail.push(t);
      onConsole?.(t);
    });
  }
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const killOnExit = (): void => {
    child.kill('SIGKILL');
  };
  process.once('exit', killOnExit);
  const cleanup = (): void => {
    process.removeListener('exit', killOnExit);
    server.close();
    rmSync(dir, { recursive: true, force: true });
    rmSync(script, { force: true });
  };

  const bootTimeoutMs = options.bootTimeoutMs ?? 180_000;
  let timer: NodeJS.Timeout | undefined;
  let client: ChannelClient;
  try {
    client = await Promise.race([
      new Promise<ChannelClient>((resolve, reject) => {
        server.once('connection', (socket: Socket) => {
          server.close(); // One peer only: qemu.
          ChannelClient.open(socket, socket, 'the VM guest agent').then(resolve, reject);
        });
      }),
      exited.then((): never => {
        throw bootError(`qemu exited (status ${child.exitCode ?? child.signalCode}) before the guest agent answered`, consoleTail);
      }),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(bootError(`the guest agent did not answer within ${bootTimeoutMs} ms`, consoleTail)), bootTimeoutMs);
      }),
    ]);
  } catch (err) {
    child.kill('SIGKILL');
    await exited;
    cleanup();
    throw err instanceof VmError ? err : bootError(String(err), consoleTail, err);
  } finally {
    clearTimeout(timer);
  }
  const bootMs = Date.now() - started;
  const kernel = prepared.kernel.version;
  return new RunningVm(client, child, exited, cleanup, { kernel, bootMs, consoleTail, stopGraceMs: boot.stopGraceMs ?? STOP_GRACE_MS });
}

function bootError(what: string, tail: ConsoleTail, cause?: unknown): VmError {
  const text = tail.toString();
  const failLine = text.split('\n').find((l) => l.startsWith(GUEST_FAIL_MARK));
  const reason = failLine === undefined ? what : `${what}: ${failLine.slice(GUEST_FAIL_MARK.length).trim()}`;
  return new VmError('E_VM_BOOT', `The VM did not come up: ${reason}\n--- console (last lines) ---\n${text.split('\n').slice(-25).join('\n')}`, {
    cause,
    details: { console: text },
  });
}

class RunningVm implements Vm {
  readonly where: string;
  readonly kernel: string;
  readonly pid: number;
  readonly bootMs: number;
  readonly scratchDir = GUEST_SCRATCH;
  private stopping: Promise<void> | undefined;
  private readonly stopGraceMs: number;
  private readonly consoleTail: ConsoleTail;

  constructor(
    private readonly client: ChannelClient,
    private readonly child: ChildProcess,
    readonly exited: Promise<void>,
    private readonly cleanup: () => void,
    info: { kernel: string; bootMs: number; consoleTail: ConsoleTail; stopGraceMs: number },
  ) {
    this.stopGraceMs = info.stopGraceMs;
    this.consoleTail = info.consoleTail;
    this.where = `vm ${info.kernel}`;
    this.kernel = info.kernel;
    this.bootMs = info.bootMs;
    this.pid = child.pid ?? -1;
    // qemu dying under us fails pending and later runs instead of leaving them to their timeouts.
    void exited.then(() => client.close());
  }

  run(argv: readonly string[], options?: RunOptions): Promise<RunResult> {
    return this.client.run(argv, options);
  }

  op(name: string, args: unknown[]): Promise<OpAnswer> {
    return this.client.op(name, args);
  }

  /** The serial console's last lines. */
  console(): string {
    return this.consoleTail.toString();
  }

  stop(): Promise<void> {
    this.stopping ??= (async () => {
      this.client.close();
      const timer = setTimeout(() => this.child.kill('SIGKILL'), this.stopGraceMs);
      await this.exited;
      clearTimeout(timer);
      this.cleanup();
    })();
    return this.stopping;
  }
}
