/**
 * A portcullis-helper child for the protocol tests: its stream on descriptor 3
 * (node makes stdio 'pipe' entries beyond 2 a connected unix socket), or on
 * stdin/stdout with --stdio. Every wait is bounded.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Duplex, Readable, Writable } from 'node:stream';
import { repoRoot } from '../helpers/paths.js';
import { encodeRequest, ResponseReader, type Fields, type Response } from './codec.js';

export const HELPER_BINARIES = {
  plain: join(repoRoot, 'helper', 'build', 'portcullis-helper'),
  asan: join(repoRoot, 'helper', 'build', 'portcullis-helper-asan'),
} as const;
export type Flavour = keyof typeof HELPER_BINARIES;

export function helperBinary(flavour: Flavour): string {
  const path = HELPER_BINARIES[flavour];
  if (!existsSync(path)) throw new Error(`${path} is missing: run make build (or make -C helper all asan)`);
  return path;
}

/** Sanitizer options that make any report fatal and loud; leaks count. */
export const SANITIZER_ENV = {
  ASAN_OPTIONS: 'detect_leaks=1:abort_on_error=1:halt_on_error=1',
  UBSAN_OPTIONS: 'print_stacktrace=1:halt_on_error=1',
};
/** What a sanitizer report starts with, on stderr. */
export const SANITIZER_REPORT = /ERROR: (Address|Leak|Undefined)Sanitizer|runtime error:|SUMMARY: \w+Sanitizer/;

const WAIT_MS = 30_000;

export class HelperProcess {
  /** Every helper started, so that a failed test does not leave one running (and the file with it). */
  private static readonly all = new Set<HelperProcess>();

  static killAll(): void {
    for (const h of HelperProcess.all) h.child.kill('SIGKILL');
    HelperProcess.all.clear();
  }

  readonly child: ChildProcess;
  private readonly stream: Duplex | undefined;
  private readonly input: Writable;
  private readonly reader = new ResponseReader();
  private readonly responses = new Map<number, Response>();
  private readonly waiters = new Map<number, (r: Response) => void>();
  private nextId = 1;
  stderr = '';
  /** Set when the helper closed its end of the stream. */
  ended = false;
  readonly exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  constructor(flavour: Flavour, mode: 'fd' | 'stdio' = 'fd', args: string[] = []) {
    const argv = mode === 'fd' ? ['--fd', '3', ...args] : ['--stdio', ...args];
    this.child = spawn(helperBinary(flavour), argv, {
      stdio: mode === 'fd' ? ['ignore', 'ignore', 'pipe', 'pipe'] : ['pipe', 'pipe', 'pipe'],
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...(flavour === 'asan' ? SANITIZER_ENV : {}) },
    });
    HelperProcess.all.add(this);
    this.exit = new Promise((resolve) => this.child.once('close', (code: number | null, signal: NodeJS.Signals | null) => resolve({ code, signal })));
    (this.child.stderr as Readable).on('data', (d: Buffer) => (this.stderr += d.toString('utf8')));
    let out: Readable;
    if (mode === 'fd') {
      this.stream = this.child.stdio[3] as Duplex;
      this.input = this.stream;
      out = this.stream;
    } else {
      this.input = this.child.stdin as Writable;
      out = this.child.stdout as Readable;
    }
    this.input.on('error', () => undefined); // EPIPE after the helper closed: the test looks at `ended` and the exit
    out.on('data', (d: Buffer) => {
      for (const r of this.reader.push(d)) {
        const waiter = this.waiters.get(r.id);
        if (waiter) {
          this.waiters.delete(r.id);
          waiter(r);
        } else this.responses.set(r.id, r);
      }
    });
    out.on('end', () => (this.ended = true));
    out.on('close', () => (this.ended = true));
  }

  /** Raw bytes, for malformed frames. */
  write(bytes: Buffer): void {
    this.input.write(bytes);
  }

  /** Sends a request and waits (bounded) for the response with its id. */
  async request(op: number, fields: Fields = [], id = this.nextId++): Promise<Response> {
    const answer = this.response(id);
    this.write(encodeRequest(op, id, fields));
    return answer;
  }

  /** The response with this id, when it arrives (bounded). */
  response(id: number): Promise<Response> {
    const have = this.responses.get(id);
    if (have) {
      this.responses.delete(id);
      return Promise.resolve(have);
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(id);
        reject(new Error(`no response to request ${id} within ${WAIT_MS} ms; stderr:\n${this.stderr}`));
      }, WAIT_MS);
      this.waiters.set(id, (r) => {
        clearTimeout(timer);
        resolve(r);
      });
    });
  }

  /** Responses that arrived without a waiter. */
  unclaimed(): number {
    return this.responses.size;
  }

  hangUp(): void {
    this.input.end();
  }

  /** Waits (bounded) for the exit; kills the helper when it does not come. */
  async exited(): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    let timer: NodeJS.Timeout | undefined;
    const bound = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        this.child.kill('SIGKILL');
        reject(new Error(`the helper did not exit within ${WAIT_MS} ms; stderr:\n${this.stderr}`));
      }, WAIT_MS);
    });
    try {
      return await Promise.race([this.exit, bound]);
    } finally {
      clearTimeout(timer);
    }
  }
}
