/**
 * A refusal sent before the body is read must arrive. A client still writing
 * its body when the answer comes must be able to read that answer: the
 * daemon answers, then goes on reading (and discarding) what the client
 * sends for a bounded number of bytes and seconds, and only then closes.
 * Closing at once made the client's next write fail (EPIPE), and with it the
 * read of an answer already sent. A client that never stops writing is cut
 * off at the bound. Real sockets; every wait is for an event, bounded.
 */
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { LINGER_BYTES, LINGER_MS } from '../../../src/daemon/api/linger.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startDaemonProcess, type DaemonProcess } from '../../fixtures/daemon.js';
import { assertRefused, parseReply, type Reply } from './fuzz-kit.js';

const ROUNDS = 200;
const CHUNK = Buffer.alloc(16 << 10, 0x20);
const MAX_BODY = 4096;

interface Outcome {
  reply: Reply | undefined;
  received: Buffer;
  /** Bytes the client managed to write before the connection ended. */
  written: number;
}

/**
 * Sends `head`, then body chunks as fast as the socket takes them: `total`
 * bytes and `tail`, or without end; resolves once the connection has closed.
 */
function writeThrough(socketPath: string, head: string, total: number | 'endless', tail = ''): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const socket = connect(socketPath);
    let received = Buffer.alloc(0);
    let written = 0;
    // A bound on the client's side too: no test may hang on a daemon that never closes.
    const bound = setTimeout(() => reject(new Error(`the connection was not closed within 60 s (${written} bytes written)`)), 60_000);
    socket.on('data', (c: Buffer) => (received = Buffer.concat([received, c])));
    // EPIPE or ECONNRESET after the daemon stops reading: expected for an endless writer; the answer must be in `received` by then.
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearTimeout(bound);
      resolve({ reply: parseReply(received, true), received, written });
    });
    const pump = (): void => {
      while (!socket.destroyed && (total === 'endless' || written < total)) {
        const chunk = total === 'endless' ? CHUNK : CHUNK.subarray(0, Math.min(CHUNK.length, total - written));
        written += chunk.length;
        if (!socket.write(chunk)) {
          socket.once('drain', pump);
          return;
        }
      }
      if (!socket.destroyed && tail !== '') socket.write(tail);
    };
    socket.once('connect', () => {
      socket.write(head);
      pump();
    });
  });
}

describe('refusals before the body is read', () => {
  let dir: string;
  let host: DaemonProcess;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'portcullisd-refusal-'));
    host = await startDaemonProcess({
      dir,
      config: { key_manager: { backend: 'local', local: { path: join(dir, 'keystore.db'), kek_file: join(dir, 'kek') } }, log: { format: 'json' }, limits: { max_body_bytes: MAX_BODY } },
    });
  });
  after(async () => {
    await host?.stop();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  it(`a client still writing a 256 KiB body reads the whole 4xx answer, ${ROUNDS} times of ${ROUNDS}`, async () => {
    const body = 256 << 10;
    const cases = [
      { head: `PUT /v1/nowhere HTTP/1.1\r\nHost: p\r\nContent-Type: application/json\r\nContent-Length: ${body}\r\n\r\n`, status: 404, code: 'E_ROUTE_NOT_FOUND' },
      { head: `PUT /v1/volumes/v1 HTTP/1.1\r\nHost: p\r\nContent-Type: application/json\r\nContent-Length: ${body}\r\n\r\n`, status: 413, code: 'E_BODY_TOO_LARGE' },
      { head: `POST /v1/volumes/v1 HTTP/1.1\r\nHost: p\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n`, status: 405, code: 'E_METHOD_NOT_ALLOWED', chunked: true },
    ];
    const missed: string[] = [];
    for (let i = 0; i < ROUNDS; i += 1) {
      const c = cases[i % cases.length] ?? cases[0]!;
      // Chunked: one chunk announcing the whole body, the body, the last chunk.
      const head = c.chunked === true ? `${c.head}${body.toString(16)}\r\n` : c.head;
      const outcome = await writeThrough(host.socketPath, head, body, c.chunked === true ? '\r\n0\r\n\r\n' : '');
      if (outcome.reply === undefined) {
        missed.push(`round ${i} (${c.code}): no answer after ${outcome.written} bytes written: ${JSON.stringify(outcome.received.toString('latin1').slice(0, 120))}`);
        continue;
      }
      assert.equal(outcome.reply.status, c.status, `round ${i}: ${outcome.reply.text}`);
      assert.equal(assertRefused(outcome.reply, `round ${i}`), c.code);
      assert.equal(outcome.reply.headers['connection'], 'close');
    }
    assert.deepEqual(missed, [], `${missed.length} of ${ROUNDS} answers never arrived`);
  });

  it(`a client that never stops writing is cut off (reading stops after ${LINGER_BYTES} bytes, the connection ends after ${LINGER_MS} ms), having had its answer`, async () => {
    for (let i = 0; i < 3; i += 1) {
      const outcome = await writeThrough(host.socketPath, `PUT /v1/nowhere HTTP/1.1\r\nHost: p\r\nContent-Length: 1000000000000\r\n\r\n`, 'endless');
      assert.ok(outcome.reply !== undefined, `round ${i}: an answer before the cut: ${JSON.stringify(outcome.received.toString('latin1').slice(0, 120))}`);
      assert.equal(assertRefused(outcome.reply, 'endless writer'), 'E_ROUTE_NOT_FOUND');
      assert.equal(outcome.reply.headers['connection'], 'close');
    }
  });
});
