import { keyError, type KeyClientError } from '../../errors.js';
import { toVersion } from './attributes.js';
import { openConnection, type Connection, type TlsSettings } from './connection.js';
import { Operation, ResultReason, ResultStatus } from './enums.js';
import { describeFailure, findAll, parseResponse, requestMessage, versionItem, versionText, child, type ProtocolVersion, type RequestItem, type Response } from './messages.js';
import { Tag } from './tags.js';

/**
 * A KMIP client: a small pool of persistent TLS connections, each with its
 * protocol version negotiated once (DiscoverVersions) right after the
 * handshake. Requests wait for a free connection; a connection that breaks
 * is dropped and the next request opens a new one. A request that fails on
 * a reused connection before any answer arrived (the server restarted or
 * closed it while idle) is sent once more on a fresh connection, but only
 * when it is safe to repeat (reads).
 */

/** What this client can speak, preferred first: 2.0, and the 1.x layouts (attributes.ts bridges the two). */
export const SUPPORTED_VERSIONS: readonly ProtocolVersion[] = [
  { major: 2, minor: 0 },
  { major: 1, minor: 4 },
  { major: 1, minor: 3 },
  { major: 1, minor: 2 },
  { major: 1, minor: 1 },
  { major: 1, minor: 0 },
];
/** Used when a server cannot discover versions (KMIP 1.0 has no DiscoverVersions). */
export const DEFAULT_VERSION: ProtocolVersion = { major: 1, minor: 2 };

export interface ClientOptions extends TlsSettings {
  poolSize: number;
  timeoutMs: number;
  maxResponseBytes: number;
  /** Offer only this version. */
  protocolVersion?: ProtocolVersion;
}

export interface ClientStats {
  /** TLS handshakes completed since the client was made. */
  handshakes: number;
  /** Connections open now. */
  open: number;
  /** Requests waiting for a free connection now. */
  waiting: number;
}

export interface SendOptions {
  /** Safe to send twice (a read): may be resent once on a fresh connection when a reused one was found dead. */
  repeatable?: boolean;
  /** Answer every batch item even after one fails. */
  continueOnError?: boolean;
}

export interface KmipClient {
  /**
   * Sends `items` as one batch; `use` reads the answer before its bytes are wiped.
   * @throws E_BACKEND_UNAVAILABLE, E_BACKEND_AUTH, E_BACKEND_PROTOCOL
   */
  send<T>(items: RequestItem[], use: (response: Response) => T, options?: SendOptions): Promise<T>;
  stats(): ClientStats;
  /** The version negotiated on the newest connection, if any. */
  version(): ProtocolVersion | undefined;
  close(): void;
}

interface Pooled {
  conn: Connection;
  version: ProtocolVersion;
}

export function createKmipClient(options: ClientOptions): KmipClient {
  const where = `${options.host}:${options.port}`;
  const idle: Pooled[] = [];
  const waiters: Array<{ resolve(p: Pooled): void; reject(err: Error): void }> = [];
  let open = 0;
  let handshakes = 0;
  let lastVersion: ProtocolVersion | undefined;
  let closed = false;

  async function connect(): Promise<Pooled> {
    const conn = await openConnection({
      ...options,
      connectTimeoutMs: options.timeoutMs,
      onHandshake: () => {
        handshakes += 1;
      },
    });
    try {
      const version = await negotiate(conn);
      lastVersion = version;
      return { conn, version };
    } catch (err) {
      conn.close();
      throw err;
    }
  }

  async function negotiate(conn: Connection): Promise<ProtocolVersion> {
    const offered = options.protocolVersion ? [options.protocolVersion] : SUPPORTED_VERSIONS;
    const { message, batchIds } = requestMessage(options.protocolVersion ?? DEFAULT_VERSION, [{ operation: Operation.DiscoverVersions, payload: offered.map(versionItem) }]);
    const response = await conn.exchange(message, options.timeoutMs, (m) => parseResponse(m, batchIds));
    const item = response.items[0];
    if (item === undefined) throw keyError('E_BACKEND_PROTOCOL', `KMIP server ${where} answered DiscoverVersions with no batch item`);
    if (item.status !== ResultStatus.Success) {
      // A KMIP 1.0 server has no DiscoverVersions: speak the configured or default version and let it say no.
      if (item.reason === ResultReason.OperationNotSupported || item.reason === ResultReason.InvalidMessage) return options.protocolVersion ?? DEFAULT_VERSION;
      throw keyError('E_BACKEND_PROTOCOL', `KMIP server ${where} refused DiscoverVersions: ${describeFailure(item)}`);
    }
    const chosen = findAll(item.payload, Tag.ProtocolVersion)[0];
    if (chosen === undefined) {
      throw keyError('E_BACKEND_PROTOCOL', `KMIP server ${where} speaks none of the protocol versions this client offers (${offered.map(versionText).join(', ')})`, {
        details: { offered: offered.map(versionText) },
      });
    }
    const version = { major: child(chosen, Tag.ProtocolVersionMajor, 'integer').value, minor: child(chosen, Tag.ProtocolVersionMinor, 'integer').value };
    if (!offered.some((v) => v.major === version.major && v.minor === version.minor)) {
      throw keyError('E_BACKEND_PROTOCOL', `KMIP server ${where} chose protocol version ${versionText(version)}, which was not offered`);
    }
    return version;
  }

  function unavailableClosed(): KeyClientError {
    return keyError('E_BACKEND_UNAVAILABLE', `The KMIP client for ${where} was closed`, { details: { requestSent: false } });
  }

  /** A usable idle connection, a new one while the pool has room, or the next one released. */
  async function acquire(fresh: boolean): Promise<Pooled> {
    if (closed) throw unavailableClosed();
    while (!fresh && idle.length > 0) {
      const p = idle.pop() as Pooled;
      if (p.conn.usable) return p;
      open -= 1;
    }
    if (open < options.poolSize) {
      open += 1;
      try {
        return await connect();
      } catch (err) {
        open -= 1;
        // Room was freed: let a waiter try its own connection rather than wait forever.
        wakeOne();
        throw err;
      }
    }
    return new Promise((resolve, reject) => waiters.push({ resolve, reject }));
  }

  function wakeOne(): void {
    const waiter = waiters.shift();
    if (waiter === undefined) return;
    acquire(false).then(waiter.resolve, waiter.reject);
  }

  function release(p: Pooled): void {
    if (closed || !p.conn.usable) {
      p.conn.close();
      open -= 1;
      wakeOne();
      return;
    }
    const waiter = waiters.shift();
    if (waiter !== undefined) waiter.resolve(p);
    else idle.push(p);
  }

  async function attempt<T>(items: RequestItem[], use: (response: Response) => T, fresh: boolean, sendOptions: SendOptions): Promise<T> {
    const p = await acquire(fresh);
    try {
      const { message, batchIds } = requestMessage(p.version, toVersion(p.version, items), { maxResponseSize: options.maxResponseBytes, continueOnError: sendOptions.continueOnError === true });
      return await p.conn.exchange(message, options.timeoutMs, (m) => use(parseResponse(m, batchIds)));
    } finally {
      release(p);
    }
  }

  return {
    async send(items, use, sendOptions = {}) {
      try {
        return await attempt(items, use, false, sendOptions);
      } catch (err) {
        const details = (err as KeyClientError).details as { reused?: boolean; answered?: boolean } | undefined;
        const stale = (err as KeyClientError).code === 'E_BACKEND_UNAVAILABLE' && details?.reused === true && details.answered === false;
        if (!stale || sendOptions.repeatable !== true || closed) throw err;
        return attempt(items, use, true, sendOptions);
      }
    },
    stats: () => ({ handshakes, open, waiting: waiters.length }),
    version: () => lastVersion,
    close() {
      if (closed) return;
      closed = true;
      for (const p of idle.splice(0)) p.conn.close();
      for (const w of waiters.splice(0)) w.reject(unavailableClosed());
    },
  };
}
