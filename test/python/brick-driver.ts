/**
 * The host side of test/python/brick_driver.py: one Debian Python process
 * with os-brick, whose encryptors' commands this side runs on the test's
 * kernel (the VM's guest), as nova's rootwrap would run them on the host.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { CommandRunner } from '../vm/runner.js';
import { repoRoot } from '../helpers/paths.js';

export interface BrickStep {
  op: 'attach' | 'detach' | 'extend';
  /** What cinder's encryption metadata names: `portcullis_brick.Luks2Encryptor`, `luks2`, ... */
  provider: string;
  device_path: string;
  key_id: string;
  /** The key's bytes, for os-brick's own classes' stub key manager. */
  key_hex: string;
  project: string | null;
  token: string | null;
  cipher?: string;
  key_size?: number;
}

export interface BrickOutcome {
  /** The class get_volume_encryptor chose, by module path. */
  class?: string;
  value?: unknown;
  error?: { type: string; message: string; code: string | null; exit_code: number | null };
  /** Every command the encryptor ran (os-brick's own classes only). */
  commands: string[][];
}

export interface BrickDriver {
  step(req: BrickStep): Promise<BrickOutcome>;
  stop(): Promise<void>;
}

export function startBrickDriver(kernel: CommandRunner, env: Record<string, string>): BrickDriver {
  const child = spawn('/usr/bin/python3', [join(repoRoot, 'test', 'python', 'brick_driver.py')], {
    cwd: repoRoot,
    env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C.UTF-8', PYTHONDONTWRITEBYTECODE: '1', PYTHONPATH: join(repoRoot, 'python'), ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const exited = new Promise<void>((resolve) => child.on('close', () => resolve()));

  async function step(req: BrickStep): Promise<BrickOutcome> {
    const commands: string[][] = [];
    child.stdin.write(`${JSON.stringify(req)}\n`);
    for (;;) {
      const next = await lines.next();
      if (next.done === true) throw new Error(`brick_driver.py exited mid-step; its stderr:\n${stderr}`);
      const msg = JSON.parse(next.value) as { run?: { argv: string[]; stdin: string | null }; result?: { class: string; value: unknown }; error?: BrickOutcome['error'] };
      if (msg.run !== undefined) {
        commands.push(msg.run.argv);
        const ran = await kernel.run(msg.run.argv, { timeoutMs: 300_000, ...(msg.run.stdin === null ? {} : { stdin: Buffer.from(msg.run.stdin) }) });
        child.stdin.write(`${JSON.stringify({ ran: { code: ran.code, stdout: ran.stdout.toString(), stderr: ran.stderr.toString() } })}\n`);
        continue;
      }
      if (msg.error !== undefined) return { error: msg.error, commands };
      return { class: msg.result?.class ?? '', value: msg.result?.value, commands };
    }
  }

  return {
    step,
    async stop() {
      child.stdin.end();
      await exited;
    },
  };
}
