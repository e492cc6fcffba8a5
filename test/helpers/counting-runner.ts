import { opName } from '../../src/luks/helper/frame.js';
import type { CommandRunner, OpAnswer, RunOptions, RunResult } from '../vm/runner.js';

/**
 * A runner that forwards everything (commands and device operations) and
 * records each command's argv: put between a daemon and its kernel, it
 * counts the processes an operation spawns.
 */
export interface CountingRunner extends CommandRunner {
  /** argv of every command run so far, in order. */
  readonly commands: string[][];
  /** Device operations asked so far, by name; the privileged helper's as `helper:OP` (its protocol's op name). */
  readonly ops: string[];
}

export function countingRunner(inner: CommandRunner): CountingRunner {
  const commands: string[][] = [];
  const ops: string[] = [];
  return {
    where: inner.where,
    commands,
    ops,
    run(argv: readonly string[], options?: RunOptions): Promise<RunResult> {
      commands.push([...argv]);
      return inner.run(argv, options);
    },
    op(name: string, args: unknown[]): Promise<OpAnswer> {
      ops.push(name === 'helper' && typeof args[0] === 'string' ? `helper:${helperOp(args[0])}` : name);
      if (inner.op === undefined) return Promise.reject(new Error(`${inner.where} serves no device operations`));
      return inner.op(name, args);
    },
  };
}

/** "cryptsetup luksOpen", "blkid -p": a command's program and first word, the way the counts below name them. */
export const commandName = (argv: readonly string[]): string => {
  const [program = '', ...rest] = argv;
  const verb = rest.find((a) => !a.startsWith('-') || a === '-p');
  return verb === undefined ? program : `${program} ${verb}`;
};

/** The op of a helper frame (base64, as the channel carries it): its u16 at byte 6. */
function helperOp(frameBase64: string): string {
  const frame = Buffer.from(frameBase64, 'base64');
  return frame.length >= 8 ? opName(frame.readUInt16LE(6)) : 'malformed';
}
