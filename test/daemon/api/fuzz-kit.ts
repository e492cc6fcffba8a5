/**
 * What the socket API fuzz needs around a real portcullisd: an HTTP client
 * over one kept-alive connection, a raw socket client for bytes no HTTP
 * client would send, and the one assertion every refused request must pass.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import fc from 'fast-check';
import { connect } from 'node:net';
import { commonErrors } from '../../../src/errors.js';
import { keyClientErrors } from '../../../src/keyclient/errors.js';
import { luksErrors } from '../../../src/luks/errors.js';
import { daemonErrors, httpStatusOf } from '../../../src/daemon/errors.js';

export interface Reply {
  status: number;
  headers: Record<string, string>;
  text: string;
}

/** Every code the daemon's answers can carry (its own and those of the layers it passes through). */
const knownCodes = new Set([...Object.keys(daemonErrors), ...Object.keys(luksErrors), ...Object.keys(keyClientErrors), ...Object.keys(commonErrors)]);

/** Cases run, by property: the file's total is asserted against PORTCULLIS_FUZZ_RUNS at the end. */
export const casesRun = new Map<string, number>();
export function countCase(property: string): void {
  casesRun.set(property, (casesRun.get(property) ?? 0) + 1);
}

/** How often each code answered, over the file: what the fuzz reached, for docs/reliability.md. */
export const codesSeen = new Map<string, number>();

/**
 * A refusal as the API promises it: a 4xx (never a 5xx for input), JSON
 * `{ error: { code, message, details } }`, a registered E_ code whose fixed
 * status is the one answered, and a message an operator can read.
 * @returns the error code
 */
export function assertRefused(reply: Reply, what: string): string {
  assert.ok(reply.status >= 400 && reply.status < 500, `expected a 4xx: ${what} -> ${reply.status} ${reply.text.slice(0, 400)}`);
  return assertErrorAnswer(reply, what);
}

/** The API's error shape with a registered code whose fixed status is the one answered, of any status. @returns the code */
export function assertErrorAnswer(reply: Reply, what: string): string {
  const show = `${what} -> ${reply.status} ${reply.text.slice(0, 400)}`;
  assert.match(reply.headers['content-type'] ?? '', /^application\/json/, `expected JSON: ${show}`);
  let body: unknown;
  try {
    body = JSON.parse(reply.text);
  } catch {
    assert.fail(`the answer is not JSON: ${show}`);
  }
  const error = (body as { error?: { code?: unknown; message?: unknown; details?: unknown } }).error;
  assert.ok(error !== undefined && typeof error === 'object', `expected an error body: ${show}`);
  assert.equal(typeof error.code, 'string', show);
  const code = error.code as string;
  assert.ok(knownCodes.has(code), `unregistered code ${code}: ${show}`);
  assert.equal(httpStatusOf(code), reply.status, `status of ${code}: ${show}`);
  assert.ok(typeof error.message === 'string' && error.message.length > 0, `expected a message: ${show}`);
  assert.ok(typeof error.details === 'object' && error.details !== null && !Array.isArray(error.details), `expected details: ${show}`);
  const key = `${reply.status} ${code}`;
  codesSeen.set(key, (codesSeen.get(key) ?? 0) + 1);
  return code;
}

/** An HTTP/1.1 client over kept-alive connections to the daemon's socket. */
export function httpClient(socketPath: string) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  function call(method: string, path: string, body?: string | Buffer, headers: Record<string, string> = {}): Promise<Reply> {
    return new Promise((resolve, reject) => {
      const req = http.request({ socketPath, agent, method, path, headers: { ...(body === undefined ? {} : { 'content-length': String(Buffer.byteLength(body)) }), ...headers } }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: flatten(res.headers), text: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      });
      req.on('error', reject);
      req.end(body);
    });
  }
  return { call, close: () => agent.destroy() };
}

function flatten(headers: http.IncomingHttpHeaders): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(headers)) if (v !== undefined) out[k] = Array.isArray(v) ? v.join(', ') : v;
  return out;
}

/**
 * Sends `bytes` as they are on a fresh connection and reads one answer (1xx
 * skipped). Resolves `undefined` when the daemon closed without answering.
 */
export function rawExchange(socketPath: string, bytes: Buffer, options: { end?: boolean; timeoutMs?: number } = {}): Promise<Reply | undefined> {
  return new Promise((resolve, reject) => {
    const socket = connect(socketPath);
    let got = Buffer.alloc(0);
    let settled = false;
    // A bound on the wait, so that a daemon that never answers fails the test instead of hanging it.
    const timer = setTimeout(() => finish(() => {
      throw new Error(`no answer within ${options.timeoutMs} ms to ${JSON.stringify(bytes.subarray(0, 200).toString('latin1'))}; got ${JSON.stringify(got.toString('latin1'))}`);
    }), options.timeoutMs ?? 60_000);
    const finish = (reply: () => Reply | undefined) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      try {
        resolve(reply());
      } catch (err) {
        reject(err);
      }
    };
    socket.on('connect', () => {
      socket.write(bytes);
      if (options.end === true) socket.end();
    });
    socket.on('data', (chunk: Buffer) => {
      got = Buffer.concat([got, chunk]);
      let reply: Reply | undefined;
      try {
        reply = parseReply(got);
      } catch (err) {
        finish(() => {
          throw err;
        });
        return;
      }
      if (reply !== undefined) finish(() => reply);
    });
    // The daemon may close right after its answer, with our unread bytes still queued: a reset after an answer is fine.
    socket.on('error', (err: NodeJS.ErrnoException) => {
      if (got.length > 0 || err.code === 'ECONNRESET' || err.code === 'EPIPE') finish(() => parseReply(got, true));
      else finish(() => {
        throw err;
      });
    });
    socket.on('close', () => finish(() => parseReply(got, true)));
  });
}

/** One complete HTTP answer from the start of `data` (after any 1xx), or undefined while incomplete. */
export function parseReply(data: Buffer, atEof = false): Reply | undefined {
  let rest = data;
  for (;;) {
    const end = rest.indexOf('\r\n\r\n');
    if (end < 0) return undefined;
    const head = rest.subarray(0, end).toString('latin1').split('\r\n');
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head[0] ?? '')?.[1] ?? 'NaN');
    if (Number.isNaN(status)) throw new Error(`not an HTTP answer: ${JSON.stringify(rest.subarray(0, 200).toString('latin1'))}`);
    const headers: Record<string, string> = {};
    for (const line of head.slice(1)) {
      const colon = line.indexOf(':');
      headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
    }
    const bodyStart = end + 4;
    if (status >= 100 && status < 200) {
      rest = rest.subarray(bodyStart);
      continue;
    }
    const length = headers['content-length'] === undefined ? undefined : Number(headers['content-length']);
    if (length === undefined && !atEof) return undefined;
    const available = rest.length - bodyStart;
    if (length !== undefined && available < length) return undefined;
    return { status, headers, text: rest.subarray(bodyStart, length === undefined ? undefined : bodyStart + length).toString('utf8') };
  }
}

/** Bytes that fast-check reports as a short excerpt, not as a 40 KiB array of numbers. */
export interface RawBytes {
  bytes: Buffer;
}

export function shown(bytes: Buffer): RawBytes {
  return { bytes, [fc.toStringMethod]: () => `${JSON.stringify(bytes.subarray(0, 300).toString('latin1'))} (${bytes.length} bytes)` } as RawBytes;
}
