import type { Duplex } from 'node:stream';
import { FrameError, FrameReader } from './frame.js';

/**
 * How frames reach a helper: one connected stream in production (the
 * socketpair the daemon started its helper on, or the helper unit's
 * socket), the VM's command channel in tests. A transport only delivers
 * bytes and matches answers to requests by id; what they mean is the
 * client's.
 */
export interface HelperTransport {
  /** Where the helper runs, for messages ("helper pid 812", "vm 6.1.0-28-amd64"). */
  readonly where: string;
  /**
   * Sends one request frame (length prefix included) and resolves with the
   * response's body. The caller owns `frame` and wipes it once this settles.
   * @throws HelperGone when the helper hangs up or the stream breaks
   */
  exchange(frame: Buffer, id: number): Promise<Buffer>;
  /** Whether the helper can still answer. */
  readonly alive: boolean;
  close(): void;
}

export class HelperGone extends Error {
  readonly code = 'E_HELPER_GONE';
}

/** A transport over a connected byte stream. */
export function streamTransport(stream: Duplex, where: string): HelperTransport {
  const waiting = new Map<number, { resolve: (body: Buffer) => void; reject: (err: Error) => void }>();
  const reader = new FrameReader();
  let gone: HelperGone | undefined;

  const fail = (reason: string): void => {
    gone ??= new HelperGone(`the privileged helper (${where}) ${reason}`);
    for (const w of waiting.values()) w.reject(gone);
    waiting.clear();
  };
  stream.on('data', (chunk: Buffer) => {
    let bodies: Buffer[];
    try {
      bodies = reader.push(chunk);
    } catch (err) {
      fail(`sent a malformed frame (${(err as FrameError).message})`);
      stream.destroy();
      return;
    }
    for (const body of bodies) {
      const id = body.length >= 8 ? body.readUInt32LE(4) : -1;
      const w = waiting.get(id);
      if (w === undefined) continue; // an answer to a request the client gave up on (timed out): dropped
      waiting.delete(id);
      w.resolve(body);
    }
  });
  stream.on('error', (err) => fail(`broke its connection (${err.message})`));
  stream.on('close', () => fail('hung up'));

  return {
    where,
    get alive() {
      return gone === undefined;
    },
    exchange(frame, id) {
      if (gone !== undefined) return Promise.reject(gone);
      return new Promise((resolve, reject) => {
        waiting.set(id, { resolve, reject });
        stream.write(frame, (err) => {
          if (err != null) {
            waiting.delete(id);
            reject(new HelperGone(`the privileged helper (${where}) could not be written to (${err.message})`));
          }
        });
      });
    },
    close() {
      stream.destroy();
    },
  };
}
