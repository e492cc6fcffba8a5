import tls, { type TLSSocket } from 'node:tls';
import { describeCause } from '../../../errors.js';
import { keyError, type KeyClientError } from '../../errors.js';
import { announcedLength, decodeTtlv, encodeTtlv, type TtlvItem } from './ttlv.js';

/**
 * One mutually authenticated TLS connection to a KMIP server, carrying one
 * request at a time (KMIP over TLS has no request ids outside a batch, so
 * answers are matched by order; one in flight keeps that trivially true).
 * Response bytes are gathered into one buffer of exactly the announced size
 * (refused above the limit before it is allocated) and wiped once decoded
 * and handled, since they may hold key material.
 */

export interface TlsSettings {
  host: string;
  port: number;
  /** CA, client certificate and key, TLS 1.2 minimum: made once, so the key's bytes need not be kept. */
  secureContext: tls.SecureContext;
  /** Name the server's certificate must carry; default: host. */
  serverName?: string;
}

export interface ConnectionOptions extends TlsSettings {
  connectTimeoutMs: number;
  maxResponseBytes: number;
  /** Called once per completed TLS handshake (the pool counts them). */
  onHandshake?: () => void;
}

export interface Connection {
  /**
   * Sends `message`, decodes the answer and hands it to `use` before the
   * response bytes are wiped; `use` must copy what it keeps.
   * @throws E_BACKEND_UNAVAILABLE (details.requestSent, details.reused), E_BACKEND_PROTOCOL
   */
  exchange<T>(message: TtlvItem, timeoutMs: number, use: (response: TtlvItem) => T): Promise<T>;
  /** False once the socket closed or failed; the pool then drops it. */
  readonly usable: boolean;
  /** How many exchanges completed on it. */
  readonly exchanges: number;
  close(): void;
}

const TLS_AUTH_CODES = /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ALTNAME|UNKNOWN_CA|BAD_CERTIFICATE|HANDSHAKE_FAILURE|CERTIFICATE_REQUIRED/;

/** Opens and handshakes a connection. @throws E_BACKEND_UNAVAILABLE, E_BACKEND_AUTH */
export function openConnection(options: ConnectionOptions): Promise<Connection> {
  const where = `${options.host}:${options.port}`;
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      host: options.host,
      port: options.port,
      secureContext: options.secureContext,
      servername: options.serverName ?? (isIp(options.host) ? '' : options.host),
      // checkServerIdentity compares against this name (an IP matches IP SANs).
      checkServerIdentity: (_host, cert) => tls.checkServerIdentity(options.serverName ?? options.host, cert),
      rejectUnauthorized: true,
    });
    const timer = setTimeout(() => fail(keyError('E_BACKEND_UNAVAILABLE', `KMIP server ${where}: no TLS handshake within ${options.connectTimeoutMs} ms`, { details: { requestSent: false } })), options.connectTimeoutMs);
    const fail = (err: KeyClientError) => {
      clearTimeout(timer);
      socket.destroy();
      reject(err);
    };
    socket.once('error', (err) => fail(connectError(where, err)));
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      options.onHandshake?.();
      resolve(connectionOver(socket, where, options.maxResponseBytes));
    });
  });
}

function connectionOver(socket: TLSSocket, where: string, maxResponseBytes: number): Connection {
  let usable = true;
  let exchanges = 0;
  let pending: { onData(chunk: Buffer): void; onEnd(err: Error | undefined): void } | undefined;
  const drop = (err?: Error) => {
    usable = false;
    const current = pending;
    pending = undefined;
    current?.onEnd(err);
  };
  socket.on('data', (chunk: Buffer) => {
    if (pending === undefined) {
      // Nothing was asked: a server talking out of turn is not one to trust with the next request.
      chunk.fill(0);
      socket.destroy();
      drop();
      return;
    }
    pending.onData(chunk);
  });
  socket.on('error', (err) => drop(err));
  socket.on('close', () => drop());
  socket.on('end', () => drop());
  // An idle pooled connection must not keep the process alive.
  socket.unref();

  return {
    get usable() {
      return usable;
    },
    get exchanges() {
      return exchanges;
    },
    close() {
      usable = false;
      socket.destroy();
    },
    exchange(message, timeoutMs, use) {
      if (!usable || pending !== undefined) throw keyError('E_BACKEND_UNAVAILABLE', `KMIP connection to ${where} is not usable`, { details: { requestSent: false } });
      const reused = exchanges > 0;
      const request = encodeTtlv(message);
      return new Promise((resolve, reject) => {
        let header = Buffer.alloc(0);
        let body: Buffer | undefined;
        let filled = 0;
        let received = false;
        socket.ref();
        const timer = setTimeout(() => {
          finish();
          socket.destroy();
          usable = false;
          reject(keyError('E_BACKEND_UNAVAILABLE', `KMIP server ${where} did not answer within ${timeoutMs} ms; the request may have been carried out`, { details: { requestSent: true, timeout: true } }));
        }, timeoutMs);
        const finish = () => {
          clearTimeout(timer);
          pending = undefined;
          socket.unref();
          request.fill(0);
        };
        pending = {
          onData(chunk) {
            received = true;
            try {
              let at = 0;
              if (body === undefined) {
                const take = Math.min(8 - header.length, chunk.length);
                header = Buffer.concat([header, chunk.subarray(0, take)]);
                at = take;
                if (header.length < 8) return;
                const total = 8 + announcedLength(header);
                if (total > maxResponseBytes) {
                  throw keyError('E_KMIP_DECODE', `KMIP server ${where} announced a ${total}-byte response, over the ${maxResponseBytes}-byte limit`, { details: { offset: 0 } });
                }
                body = Buffer.alloc(total);
                header.copy(body, 0);
                filled = 8;
              }
              const n = Math.min(body.length - filled, chunk.length - at);
              chunk.copy(body, filled, at, at + n);
              filled += n;
              if (at + n < chunk.length) throw keyError('E_BACKEND_PROTOCOL', `KMIP server ${where} sent more than one response`);
              if (filled < body.length) return;
              finish();
              exchanges += 1;
              const done = body;
              const decoded = decodeTtlv(done, { maxBytes: maxResponseBytes });
              // The answer was read whole: what `use` makes of it (a KMIP failure, say) leaves the connection fine.
              try {
                resolve(use(decoded));
              } catch (err) {
                reject(err);
              } finally {
                done.fill(0);
              }
            } catch (err) {
              finish();
              body?.fill(0);
              socket.destroy();
              usable = false;
              reject(asProtocolError(where, err));
            } finally {
              chunk.fill(0);
            }
          },
          onEnd(err) {
            finish();
            body?.fill(0);
            const why = err === undefined ? 'closed the connection' : `failed (${describeCause(err)})`;
            reject(
              keyError('E_BACKEND_UNAVAILABLE', `KMIP server ${where} ${why} before answering`, {
                details: { requestSent: true, reused, answered: received, ...(err ? { errno: (err as NodeJS.ErrnoException).code } : {}) },
                ...(err ? { cause: err } : {}),
              }),
            );
          },
        };
        socket.write(request);
      });
    },
  };
}

function asProtocolError(where: string, err: unknown): KeyClientError {
  const code = (err as { code?: unknown }).code;
  if (code === 'E_BACKEND_PROTOCOL' || code === 'E_BACKEND_UNAVAILABLE') return err as KeyClientError;
  if (code === 'E_KMIP_DECODE') return keyError('E_BACKEND_PROTOCOL', `KMIP server ${where} sent an invalid message: ${(err as Error).message}`, { cause: err });
  return keyError('E_BACKEND_PROTOCOL', `KMIP server ${where}: cannot handle the response (${describeCause(err)})`, { cause: err });
}

function connectError(where: string, err: Error): KeyClientError {
  const code = String((err as NodeJS.ErrnoException).code ?? '');
  if (TLS_AUTH_CODES.test(code) || /alert/i.test(err.message)) {
    return keyError('E_BACKEND_AUTH', `TLS with KMIP server ${where} failed (${code || err.message}): check ca_file, cert_file, key_file and server_name`, {
      details: { requestSent: false, tls: true, errno: code },
      cause: err,
    });
  }
  return keyError('E_BACKEND_UNAVAILABLE', `Cannot connect to KMIP server ${where} (${code || err.message})`, { details: { requestSent: false, errno: code }, cause: err });
}

function isIp(host: string): boolean {
  return /^[0-9.]+$/.test(host) || host.includes(':');
}
