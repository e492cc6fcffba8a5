import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync } from 'node:fs';
import type { Duplex } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { FrameReader } from '../../src/luks/helper/frame.js';
import { HelperGone, type HelperTransport } from '../../src/luks/helper/transport.js';
import { VmError } from './errors.js';
import type { CommandRunner, OpAnswer } from './runner.js';

/**
 * The privileged helper beside the test kernel: the guest agent starts the
 * same portcullis-helper binary production runs (the guest's root is this
 * host's over 9p) and passes its frames through untouched, so a test in the
 * VM drives the production protocol and the production C code; only the
 * transport (the command channel instead of a socketpair) differs.
 */

/**
 * Where the guest's helper writes its log (one JSON line per operation), in
 * the guest's own /run (a tmpfs): the secret scan reads it, as it reads the
 * daemon's log (test/daemon/integrity.vm.test.ts).
 */
export const GUEST_HELPER_LOG = '/run/portcullis-helper.log';

/** Where the build leaves the helper, from this file's place in dist/test/vm. */
export const HELPER_BINARY = fileURLToPath(new URL('../../../helper/build/portcullis-helper', import.meta.url));

/** The guest agent's side: one helper child for the agent's life, a frame in, its answer out. */
export function serveHelper(binary = HELPER_BINARY): (frameBase64: unknown) => Promise<OpAnswer> {
  let child: ChildProcess | undefined;
  let stream: Duplex | undefined;
  // Several daemons (each numbering its requests from 1) may share this agent's helper: requests get
  // the agent's own ids on the way in and their callers' back on the way out.
  const waiting = new Map<number, { id: number; settle: (body: Buffer | Error) => void }>();
  let nextId = 1;
  const reader = new FrameReader();

  function start(): Duplex {
    if (!existsSync(binary)) throw new VmError('E_OP_FAILED', `${binary} is missing: run make build`);
    const log = openSync(GUEST_HELPER_LOG, 'a', 0o600);
    try {
      child = spawn(binary, ['--fd', '3', '--symlink-dir', '/dev'], { stdio: ['ignore', 'ignore', log, 'pipe'] });
    } finally {
      closeSync(log);
    }
    const s = child.stdio[3] as Duplex;
    s.on('data', (chunk: Buffer) => {
      for (const body of reader.push(chunk)) {
        const ours = body.readUInt32LE(4);
        const w = waiting.get(ours);
        waiting.delete(ours);
        if (w === undefined) continue;
        // The caller's own id back in its answer.
        const answer = Buffer.from(body);
        answer.writeUInt32LE(w.id, 4);
        w.settle(answer);
      }
    });
    s.on('close', () => {
      for (const w of waiting.values()) w.settle(new VmError('E_OP_FAILED', 'the helper in the guest exited'));
      waiting.clear();
      stream = undefined;
    });
    return s;
  }

  return (frameBase64) => {
    if (typeof frameBase64 !== 'string') throw new VmError('E_RUN_ARGUMENT', 'helper: the frame must be base64 text');
    const frame = Buffer.from(frameBase64, 'base64');
    if (frame.length < 12) throw new VmError('E_RUN_ARGUMENT', 'helper: a frame of fewer than 12 bytes');
    const id = frame.readUInt32LE(8);
    const ours = nextId;
    nextId = nextId >= 0xffffffff ? 1 : nextId + 1;
    frame.writeUInt32LE(ours, 8);
    stream ??= start();
    const s = stream;
    return new Promise<OpAnswer>((resolve, reject) => {
      waiting.set(ours, { id, settle: (body) => (body instanceof Error ? reject(body) : resolve({ json: null, body })) });
      s.write(frame);
    });
  };
}

/** The test's side: a HelperTransport whose frames go to the guest's helper over the runner's channel. */
export function vmHelperTransport(runner: CommandRunner): HelperTransport {
  let gone: HelperGone | undefined;
  return {
    where: `helper in ${runner.where}`,
    get alive() {
      return gone === undefined;
    },
    async exchange(frame) {
      if (runner.op === undefined) throw new HelperGone(`${runner.where} serves no helper`);
      try {
        return (await runner.op('helper', [frame.toString('base64')])).body;
      } catch (err) {
        gone = new HelperGone(`the helper in ${runner.where} is unreachable (${(err as Error).message})`);
        throw gone;
      }
    },
    close() {},
  };
}
