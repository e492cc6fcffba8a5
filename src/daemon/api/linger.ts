import type { ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

/**
 * Graceful close after a refusal sent before the body was read ("lingering
 * close", as Apache's): the answer goes out whole, then what the client
 * still sends is read and discarded, up to a bound in bytes and in time, and
 * only then is the connection closed. Closing at once made a client still
 * writing fail its next write (EPIPE, a reset), and lose with it the answer
 * already on its way: 40 of 200 in test/daemon/api/graceful-refusal.test.ts.
 */

/** At most this much more of an unread body is read and discarded after a refusal. */
export const LINGER_BYTES = 1 << 20;
/** And for at most this long. */
export const LINGER_MS = 5_000;

/**
 * Sockets whose request was answered and that only drain now, each with the
 * function that ends its linger: what Node's parser later says of the rest
 * (a malformed chunk, the request timeout) ends it, never earns a second answer.
 */
export const lingering = new WeakMap<Socket, () => void>();

/**
 * Writes `body` (the whole answer: the headers promise its length and
 * `connection: close`), then ends the response once the client's body has
 * ended, the client went away, or LINGER_MS passed. Past LINGER_BYTES more
 * the body is no longer read: the client's writes then block (rather than
 * fail) while it reads its answer, until LINGER_MS ends the connection.
 * Closing with unread bytes would reset it, and a client busy writing could
 * lose the answer to that reset. `bodyComing` false: an Expect:
 * 100-continue never answered, so the client sends no body and there is
 * nothing to wait for.
 */
export function endAfterLinger(res: ServerResponse, body: string, bodyComing: boolean): void {
  const req = res.req;
  if (!bodyComing) {
    res.end(body);
    return;
  }
  res.write(body);
  let discarded = 0;
  let done = false;
  const stopReading = (): void => {
    req.off('data', onData);
    req.pause();
  };
  const finish = (): void => {
    if (done) return;
    done = true;
    clearTimeout(timer);
    stopReading();
    // With `connection: close`, Node closes the connection once this is written.
    res.end();
  };
  const onData = (chunk: Buffer): void => {
    discarded += chunk.length;
    if (discarded > LINGER_BYTES) stopReading();
  };
  const timer = setTimeout(finish, LINGER_MS);
  timer.unref();
  lingering.set(req.socket, finish);
  req.on('data', onData);
  req.once('end', finish);
  req.once('close', finish);
  req.resume();
}
