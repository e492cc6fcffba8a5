import type { Readable, Writable } from 'node:stream';
import { VmError, isVmErrorCode } from './errors.js';
import { FrameDecoder, encodeFrame, type ErrorHeader, type Frame, type OpHeader, type RunHeader } from './protocol.js';
import { normalizeRun, type CommandRunner, type OpAnswer, type RunOptions, type RunResult } from './runner.js';

/**
 * Extra time the client waits beyond a command's own timeout before it gives
 * up on the peer: the peer kills the command at timeoutMs and answers, so
 * silence after that means the peer itself is stuck (TCG can be slow to
 * schedule, hence generous).
 */
const PEER_GRACE_MS = 30_000;

/** A device operation answers from memory or one read: past this the peer is stuck. */
const OP_TIMEOUT_MS = 60_000;

interface Pending {
  resolve: (result: RunResult | OpAnswer) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

/**
 * A CommandRunner whose commands run on the other end of a byte stream: the
 * guest agent over virtio-serial, or a broker over a unix socket.
 */
export class ChannelClient implements CommandRunner {
  readonly where: string;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  /** Set once the channel is unusable; new runs reject with it. */
  private closed: VmError | undefined;
  /** Resolves when the peer goes away or close() is called. */
  readonly done: Promise<void>;
  private markDone!: () => void;

  private constructor(
    where: string,
    private readonly output: Writable,
  ) {
    this.where = where;
    this.done = new Promise((resolve) => {
      this.markDone = resolve;
    });
  }

  /**
   * Waits for the peer's hello and returns a client. Rejects when the stream
   * ends or fails first; the caller bounds the wait (destroy the streams).
   * @throws VmError E_VM_CHANNEL
   */
  static open(input: Readable, output: Writable, peer: string): Promise<ChannelClient> {
    return new Promise((resolve, reject) => {
      const decoder = new FrameDecoder();
      let client: ChannelClient | undefined;
      const fail = (err: VmError): void => {
        if (client === undefined) reject(err);
        else client.shutdown(err);
        input.destroy();
      };
      input.on('data', (chunk: Buffer) => {
        let frames: Frame[];
        try {
          frames = decoder.push(chunk);
        } catch (err) {
          fail(err instanceof VmError ? err : new VmError('E_VM_CHANNEL', String(err)));
          return;
        }
        for (const frame of frames) {
          if (client === undefined) {
            if (frame.header.type !== 'hello') {
              fail(new VmError('E_VM_CHANNEL', `${peer} spoke before saying hello`));
              return;
            }
            client = new ChannelClient(frame.header.where, output);
            resolve(client);
          } else {
            client.receive(frame);
          }
        }
      });
      const lost = (cause?: Error): void => fail(new VmError('E_VM_CHANNEL', `Lost the command channel to ${peer}`, { cause }));
      input.on('end', () => lost());
      input.on('error', (err) => lost(err));
      input.on('close', () => lost());
      // A write after the peer went away fails here; the read side reports the loss.
      output.on('error', () => {});
    });
  }

  run(argv: readonly string[], options: RunOptions = {}): Promise<RunResult> {
    if (this.closed !== undefined) return Promise.reject(this.closed);
    let run;
    try {
      run = normalizeRun(argv, options);
    } catch (err) {
      return Promise.reject(err);
    }
    const id = this.nextId++;
    const header: RunHeader = { type: 'run', id, argv: run.argv, timeoutMs: run.timeoutMs, maxOutputBytes: run.maxOutputBytes };
    if (run.cwd !== undefined) header.cwd = run.cwd;
    if (run.env !== undefined) header.env = run.env;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new VmError('E_VM_CHANNEL', `${this.where} did not answer for ${JSON.stringify(run.argv[0])} within ${run.timeoutMs + PEER_GRACE_MS} ms`));
      }, run.timeoutMs + PEER_GRACE_MS);
      this.pending.set(id, { resolve: resolve as (r: RunResult | OpAnswer) => void, reject, timer });
      this.output.write(encodeFrame(header, run.stdin));
    });
  }

  op(name: string, args: unknown[]): Promise<OpAnswer> {
    if (this.closed !== undefined) return Promise.reject(this.closed);
    const id = this.nextId++;
    const header: OpHeader = { type: 'op', id, op: name, args };
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new VmError('E_VM_CHANNEL', `${this.where} did not answer the device operation ${name} within ${OP_TIMEOUT_MS} ms`));
      }, OP_TIMEOUT_MS);
      this.pending.set(id, { resolve: resolve as (r: RunResult | OpAnswer) => void, reject, timer });
      this.output.write(encodeFrame(header));
    });
  }

  /** Stops sending; pending runs reject with E_VM_STOPPED. Safe to call twice. */
  close(): void {
    this.shutdown(new VmError('E_VM_STOPPED', `The command channel to ${this.where} is closed`));
    this.output.end();
  }

  private receive(frame: Frame): void {
    const { header } = frame;
    if (header.type !== 'result' && header.type !== 'error' && header.type !== 'opResult') return;
    const entry = this.pending.get(header.id);
    if (entry === undefined) return; // Answer to a run we already gave up on.
    this.pending.delete(header.id);
    clearTimeout(entry.timer);
    if (header.type === 'error') {
      const code = isVmErrorCode(header.code) ? header.code : 'E_VM_CHANNEL';
      const details: Record<string, unknown> = { remoteCode: header.code, where: this.where };
      if (header.errno !== undefined) details.errno = header.errno;
      entry.reject(new VmError(code, header.message, { details }));
      return;
    }
    if (header.type === 'opResult') {
      entry.resolve({ json: header.json, body: frame.body });
      return;
    }
    if (header.stdoutBytes > frame.body.length) {
      entry.reject(new VmError('E_VM_CHANNEL', `Result frame from ${this.where} is shorter than its stdoutBytes`));
      return;
    }
    entry.resolve({
      code: header.code,
      signal: header.signal,
      timedOut: header.timedOut,
      stdout: frame.body.subarray(0, header.stdoutBytes),
      stderr: frame.body.subarray(header.stdoutBytes),
    });
  }

  private shutdown(err: VmError): void {
    if (this.closed !== undefined) return;
    this.closed = err;
    for (const entry of this.pending.values()) {
      clearTimeout(entry.timer);
      entry.reject(err);
    }
    this.pending.clear();
    this.markDone();
  }
}

/**
 * Serves `runner` on a byte stream: says hello, runs each request as it
 * arrives (concurrently), answers with its id. Resolves when the input ends;
 * commands still running then finish, and their answers are dropped.
 */
export function serveChannel(runner: CommandRunner, input: Readable, output: Writable): Promise<void> {
  output.on('error', () => {}); // The peer left; the read side ends the loop.
  output.write(encodeFrame({ type: 'hello', where: runner.where }));
  const decoder = new FrameDecoder();
  return new Promise((resolve) => {
    const finish = (): void => resolve();
    input.on('data', (chunk: Buffer) => {
      let frames: Frame[];
      try {
        frames = decoder.push(chunk);
      } catch {
        // A peer that breaks framing cannot be resynchronised: hang up on it.
        input.destroy();
        output.end();
        return;
      }
      for (const { header, body } of frames) {
        if (header.type === 'op') {
          serveOp(runner, header, output);
          continue;
        }
        if (header.type !== 'run') continue;
        const options: RunOptions = { stdin: body, timeoutMs: header.timeoutMs, maxOutputBytes: header.maxOutputBytes };
        if (header.cwd !== undefined) options.cwd = header.cwd;
        if (header.env !== undefined) options.env = header.env;
        runner.run(header.argv, options).then(
          (r) => {
            if (output.writable) {
              const head = { type: 'result' as const, id: header.id, code: r.code, signal: r.signal, timedOut: r.timedOut, stdoutBytes: r.stdout.length };
              output.write(encodeFrame(head, Buffer.concat([r.stdout, r.stderr])));
            }
          },
          (err: unknown) => {
            const code = err instanceof VmError ? err.code : 'E_VM_CHANNEL';
            const message = err instanceof Error ? err.message : String(err);
            const errno = err instanceof VmError ? err.details.errno : undefined;
            const frame: ErrorHeader = { type: 'error', id: header.id, code, message };
            if (typeof errno === 'string') frame.errno = errno;
            if (output.writable) output.write(encodeFrame(frame));
          },
        );
      }
    });
    input.on('end', finish);
    input.on('close', finish);
    input.on('error', finish);
  });
}

/** Answers one device operation through the runner's op(), in the channel's frames. */
function serveOp(runner: CommandRunner, header: OpHeader, output: Writable): void {
  const answer = runner.op === undefined ? Promise.reject(new VmError('E_OP_FAILED', `${runner.where} serves no device operations`)) : runner.op(header.op, header.args);
  answer.then(
    (a) => {
      if (output.writable) output.write(encodeFrame({ type: 'opResult', id: header.id, json: a.json, binary: a.body.length > 0 }, a.body));
    },
    (err: unknown) => {
      const code = err instanceof VmError ? err.code : 'E_OP_FAILED';
      const errno = err instanceof VmError ? err.details.errno : (err as NodeJS.ErrnoException).code;
      const frame: ErrorHeader = { type: 'error', id: header.id, code, message: err instanceof Error ? err.message : String(err) };
      if (typeof errno === 'string') frame.errno = errno;
      if (output.writable) output.write(encodeFrame(frame));
    },
  );
}
