import type { CommandRunner } from './runner.js';
import { VmError } from './errors.js';

/**
 * File access beside the runner's kernel (in the guest for a VM), built on
 * run() so every runner has it without a protocol of its own.
 */
export async function readFileVia(runner: CommandRunner, path: string, timeoutMs = 60_000): Promise<Buffer> {
  const r = await runner.run(['cat', '--', path], { timeoutMs });
  if (r.code !== 0) throw new VmError('E_RUN_ARGUMENT', `Cannot read ${path} on ${runner.where}: ${r.stderr.toString('utf8').trim()}`);
  return r.stdout;
}

export async function writeFileVia(runner: CommandRunner, path: string, data: Uint8Array, timeoutMs = 60_000): Promise<void> {
  const r = await runner.run(['sh', '-c', 'cat > "$1"', 'sh', path], { stdin: data, timeoutMs });
  if (r.code !== 0) throw new VmError('E_RUN_ARGUMENT', `Cannot write ${path} on ${runner.where}: ${r.stderr.toString('utf8').trim()}`);
}
