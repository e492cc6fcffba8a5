import { readFileSync } from 'node:fs';
import http, { type IncomingHttpHeaders, type IncomingMessage } from 'node:http';
import https from 'node:https';
import type { Socket } from 'node:net';
import { describeCause } from '../../../errors.js';
import { keyError, type KeyClientError } from '../../errors.js';
import type { SecretBuffer, SecureAllocator } from '../../../util/secure-memory.js';

/**
 * A small HTTP(S) client for the key-manager backends, on node:http/https
 * only. It never retries (the retrying wrapper does, knowing the operation)
 * and it never throws anything but KeyClientError: network failures become
 * E_BACKEND_UNAVAILABLE with `details.requestSent`, so a wrapper can tell a
 * POST that never left this host (safe to resend) from one that may have run.
 */
export interface HttpClientOptions {
  /** Verify the server's TLS certificate (Castellan's verify_ssl). */
  verifyTls: boolean;
  /** PEM CA bundle to verify against instead of the system store. */
  caFile?: string;
  /** Connections per origin; further requests queue here, not on the server. @default 32 */
  maxSockets?: number;
}

export interface HttpRequest {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  url: URL;
  /** Who is on the other end, for messages: "Barbican", "Keystone". */
  service: string;
  headers?: Record<string, string>;
  /** The caller owns and wipes it: a 401 re-authentication may resend it. */
  body?: Buffer;
  /** Deadline for the whole exchange, connect to last byte. */
  timeoutMs: number;
  /** The caller's own deadline: when it aborts, the exchange is torn down at once (the socket destroyed, not left to finish). */
  signal?: AbortSignal | undefined;
  /** When set, a 2xx body goes straight into this allocator's memory and the network chunks are zeroed. */
  secretBody?: SecureAllocator;
}

export interface HttpResponse {
  status: number;
  headers: IncomingHttpHeaders;
  /** Error bodies and non-secret bodies. Empty when the body went to `secret`. */
  body: Buffer;
  secret?: SecretBuffer;
}

export interface HttpClient {
  request(req: HttpRequest): Promise<HttpResponse>;
  /** Closes pooled connections; safe to call twice. */
  close(): void;
}

/** Bodies above this are refused: no Barbican or Keystone answer we read comes near it. */
const maxBodyBytes = 1 << 20;

/** @throws E_INVALID_ARGUMENT when the CA file cannot be read. */
export function createHttpClient(options: HttpClientOptions): HttpClient {
  let ca: Buffer | undefined;
  if (options.caFile !== undefined) {
    try {
      ca = readFileSync(options.caFile);
    } catch (err) {
      throw keyError('E_INVALID_ARGUMENT', `Cannot read the CA bundle ${options.caFile} (${errnoOf(err) ?? describeCause(err)})`, { cause: err });
    }
  }
  // Idle pooled sockets close after 4 s, before a typical server's keep-alive
  // timeout (Apache: 5 s) closes them under us mid-request.
  const common = { keepAlive: true, timeout: 4000, maxSockets: options.maxSockets ?? 32 };
  const httpAgent = new http.Agent(common);
  const httpsAgent = new https.Agent({ ...common, rejectUnauthorized: options.verifyTls, ...(ca ? { ca } : {}) });
  return {
    request: (req) => send(req, req.url.protocol === 'https:' ? httpsAgent : httpAgent),
    close() {
      httpAgent.destroy();
      httpsAgent.destroy();
    },
  };
}

function send(req: HttpRequest, agent: http.Agent): Promise<HttpResponse> {
  const transport = req.url.protocol === 'https:' ? https : http;
  return new Promise<HttpResponse>((resolve, reject) => {
    // requestSent: a connection (and TLS session) was established, so the server may have seen the request.
    let requestSent = false;
    let settled = false;
    const fail = (err: KeyClientError) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      req.signal?.removeEventListener('abort', onAbort);
      reject(err);
    };
    const onAbort = () => {
      fail(networkError(req, 'EDEADLINE', requestSent, "was still working when the caller's deadline passed; the request was abandoned", undefined, { deadline: true }));
      outgoing?.destroy();
    };
    if (req.signal?.aborted === true) {
      settled = true;
      reject(networkError(req, 'EDEADLINE', false, "was not asked: the caller's deadline had already passed", undefined, { deadline: true }));
      return;
    }
    const headers: Record<string, string> = { ...req.headers };
    if (req.body !== undefined) headers['content-length'] = String(req.body.length);
    let outgoing: http.ClientRequest | undefined;
    try {
      outgoing = transport.request(req.url, { method: req.method, agent, headers });
    } catch (err) {
      // Node refuses bad header values (CR/LF in a project id or token) before sending anything.
      settled = true;
      reject(keyError('E_INVALID_ARGUMENT', `Cannot send ${req.method} ${pathOf(req.url)} to ${req.service}: ${describeCause(err)}`, { cause: err }));
      return;
    }
    const sending = outgoing;
    const timer = setTimeout(() => {
      fail(networkError(req, 'ETIMEDOUT', requestSent, `did not answer within ${req.timeoutMs / 1000} s`));
      sending.destroy();
    }, req.timeoutMs);
    req.signal?.addEventListener('abort', onAbort, { once: true });
    sending.on('socket', (socket: Socket) => {
      const established = socket.readyState === 'open' && !socket.connecting;
      if (established) requestSent = true;
      else socket.once(req.url.protocol === 'https:' ? 'secureConnect' : 'connect', () => (requestSent = true));
    });
    sending.on('error', (err) => fail(fromSocketError(req, err, requestSent)));
    sending.on('response', (res) => {
      readBody(req, res).then(
        (response) => {
          if (settled) {
            response.secret?.wipe();
            return;
          }
          settled = true;
          clearTimeout(timer);
          req.signal?.removeEventListener('abort', onAbort);
          resolve(response);
        },
        (err: KeyClientError) => fail(err),
      );
    });
    sending.end(req.body);
  });
}

function readBody(req: HttpRequest, res: IncomingMessage): Promise<HttpResponse> {
  const status = res.statusCode ?? 0;
  const toSecret = req.secretBody !== undefined && status >= 200 && status < 300;
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const wipeChunks = () => {
      if (toSecret) for (const chunk of chunks) chunk.fill(0);
    };
    // A response cut off by the deadline or the peer ends in 'close' without 'end'.
    res.on('close', () => {
      if (!done) wipeChunks();
    });
    res.on('data', (chunk: Buffer) => {
      size += chunk.length;
      chunks.push(chunk);
      if (size > maxBodyBytes) {
        wipeChunks();
        res.destroy();
        reject(keyError('E_BACKEND_PROTOCOL', `${req.service} sent more than ${maxBodyBytes} bytes for ${req.method} ${pathOf(req.url)}; refusing`));
      }
    });
    res.on('error', (err) => {
      wipeChunks();
      reject(fromSocketError(req, err, true));
    });
    res.on('end', () => {
      done = true;
      if (size > maxBodyBytes) return;
      if (!toSecret) {
        resolve({ status, headers: res.headers, body: Buffer.concat(chunks, size) });
        return;
      }
      try {
        const secret = (req.secretBody as SecureAllocator).alloc(size);
        let offset = 0;
        for (const chunk of chunks) {
          secret.view().set(chunk, offset);
          offset += chunk.length;
        }
        resolve({ status, headers: res.headers, body: Buffer.alloc(0), secret });
      } catch (err) {
        reject(keyError('E_BACKEND_PROTOCOL', `Cannot hold a ${size}-byte secret from ${req.service}: ${describeCause(err)}`, { cause: err }));
      } finally {
        wipeChunks();
      }
    });
  });
}

const tlsVerifyCodes = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_UNTRUSTED',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

function fromSocketError(req: HttpRequest, err: unknown, requestSent: boolean): KeyClientError {
  const code = errnoOf(err) ?? 'EUNKNOWN';
  if (tlsVerifyCodes.has(code)) {
    return keyError(
      'E_BACKEND_UNAVAILABLE',
      `${req.service} at ${req.url.origin} presented a TLS certificate that could not be verified (${code}); set verify_ssl_path to the CA bundle that signed it`,
      { details: { requestSent: false, tls: true, errno: code }, cause: err },
    );
  }
  const what: Record<string, string> = {
    ECONNREFUSED: `refused the connection (ECONNREFUSED); is ${req.service} running and listening there?`,
    ECONNRESET: 'closed the connection mid-request (ECONNRESET)',
    EHOSTUNREACH: 'is unreachable (EHOSTUNREACH); check routing and firewalls',
    ENETUNREACH: 'is unreachable (ENETUNREACH); check routing and firewalls',
    ENOTFOUND: 'has a host name that does not resolve (ENOTFOUND); check the URL and DNS',
    EAI_AGAIN: 'has a host name that could not be resolved right now (EAI_AGAIN); check DNS',
  };
  return networkError(req, code, requestSent, what[code] ?? `failed: ${describeCause(err)} (${code})`, err);
}

function networkError(req: HttpRequest, code: string, requestSent: boolean, what: string, cause?: unknown, extra: Record<string, unknown> = {}): KeyClientError {
  const sent = requestSent ? 'the request may have reached it' : 'the request never reached it';
  return keyError('E_BACKEND_UNAVAILABLE', `${req.service} at ${req.url.origin} ${what} (${req.method} ${pathOf(req.url)}; ${sent})`, {
    details: { requestSent, errno: code, ...extra },
    cause,
  });
}

function errnoOf(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

/** The path only: query strings can carry names, never worth putting in errors. */
function pathOf(url: URL): string {
  return url.pathname;
}

/**
 * Retry-After as milliseconds from `now`: delta-seconds or an HTTP date
 * (RFC 9110 §10.2.3). Undefined when absent or unparseable.
 */
export function parseRetryAfter(value: string | string[] | undefined, now: number): number | undefined {
  const raw = Array.isArray(value) ? value[0] : value;
  if (raw === undefined || raw.trim() === '') return undefined;
  const text = raw.trim();
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  const date = Date.parse(text);
  if (Number.isNaN(date)) return undefined;
  return Math.max(0, date - now);
}

/** Statuses that mean "the service is struggling, try later" rather than "no". */
export function isUnavailableStatus(status: number): boolean {
  return status === 408 || status === 429 || status >= 500;
}

/**
 * E_BACKEND_UNAVAILABLE for a 408/429/5xx answer, with status and Retry-After
 * for the retrying wrapper.
 */
export function unavailableStatusError(
  req: Pick<HttpRequest, 'service' | 'method' | 'url'>,
  res: HttpResponse,
  now: number,
  reason: string = errorText(res),
): KeyClientError {
  const retryAfterMs = parseRetryAfter(res.headers['retry-after'], now);
  const details: Record<string, unknown> = { status: res.status, requestSent: true };
  if (retryAfterMs !== undefined) details['retryAfterMs'] = retryAfterMs;
  return keyError(
    'E_BACKEND_UNAVAILABLE',
    `${req.service} at ${req.url.origin} answered ${res.status} to ${req.method} ${pathOf(req.url)}${reason ? `: ${reason}` : ''}`,
    { details },
  );
}

/**
 * The human part of an OpenStack error body: Barbican's `{description}`,
 * Keystone's `{error: {message}}`, or a short plain-text body.
 */
export function errorText(res: HttpResponse): string {
  if (res.body.length === 0) return '';
  const text = res.body.subarray(0, 2048).toString('utf8');
  try {
    const parsed = JSON.parse(text) as { description?: unknown; title?: unknown; error?: { message?: unknown } };
    if (typeof parsed.description === 'string') return parsed.description;
    if (typeof parsed.error?.message === 'string') return parsed.error.message;
    if (typeof parsed.title === 'string') return parsed.title;
  } catch {
    // Not JSON: a proxy's HTML or text page. Show a little of it.
  }
  return text.replace(/<[^>]*>/g, ' ').replace(/\s+/g, ' ').trim().slice(0, 200);
}

/** Parses a JSON body. @throws E_BACKEND_PROTOCOL */
export function jsonBody(req: Pick<HttpRequest, 'service' | 'method' | 'url'>, res: HttpResponse): unknown {
  try {
    return JSON.parse(res.body.toString('utf8'));
  } catch (err) {
    throw keyError('E_BACKEND_PROTOCOL', `${req.service} at ${req.url.origin} answered ${req.method} ${pathOf(req.url)} with a body that is not JSON`, {
      details: { status: res.status },
      cause: err,
    });
  }
}
