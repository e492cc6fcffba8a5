import { defineBackend, type BackendDeps } from '../../backend.js';
import { isTransient, keyError, KeyClientError } from '../../errors.js';
import { createHttpClient, errorText, isUnavailableStatus, jsonBody, unavailableStatusError, type HttpRequest, type HttpResponse } from './http.js';
import type { KeyManager, RequestContext } from '../../key-manager.js';
import { createKeystoneSession, type KeystoneSession } from './keystone.js';
import { objectTypes, type ManagedObject } from '../../objects/index.js';
import type { SecretBuffer } from '../../../util/secure-memory.js';
import { barbicanOptionsSchema, keystoneCredentials, type BarbicanOptions } from './options.js';
import { openMetadataStore, type MetadataStore, type StoredMetadata } from './metadata-store.js';
import { pemToDer, storedAsPem } from './pem.js';
import { barbicanConsumers } from './consumers.js';
import { keyOrder, keyPairOrder, objectFromMetadata, parseSecretMetadata, secretUuid, storeBody, uuidOfRef, type SecretMetadata } from './wire.js';

/**
 * OpenStack Barbican v1, Castellan's BarbicanKeyManager in TypeScript:
 * keys through orders (polled number_of_retries times, retry_delay apart),
 * other objects stored as base64 octet-stream secrets, payloads fetched as
 * application/octet-stream into secure memory. Never retries by itself: the
 * retrying wrapper does, reading details.requestSent and retryAfterMs.
 */
export const barbicanBackend = defineBackend({
  name: 'barbican',
  description: 'OpenStack Barbican v1 secrets and orders, with Keystone v3 auth (password, application credential, token pass-through)',
  optionsSchema: barbicanOptionsSchema,
  create: async (options, deps) => barbicanKeyManager(options, deps),
});

export type { BarbicanOptions } from './options.js';

/** Printable ASCII without spaces: what may go into X-Project-Id and X-Auth-Token. */
const headerSafe = /^[\x21-\x7e]{1,4096}$/;

interface Call {
  method: HttpRequest['method'];
  path: string;
  body?: Buffer;
  /** The body is key material: into secure memory. */
  secret?: boolean;
  /** The secret this call is about: a 404 then means E_KEY_NOT_FOUND. */
  secretId?: string;
  accept?: string;
  timeoutMs?: number;
  /** More request headers (the consumers' microversion). */
  headers?: Record<string, string>;
}

function barbicanKeyManager(options: BarbicanOptions, deps: BackendDeps): KeyManager {
  const now = deps.now ?? Date.now;
  const timeoutMs = options.timeout * 1000;
  const http = createHttpClient({ verifyTls: options.verify_ssl, ...(options.verify_ssl_path ? { caFile: options.verify_ssl_path } : {}) });
  const creds = keystoneCredentials(options.auth);
  const keystone: KeystoneSession | undefined = creds && createKeystoneSession(creds, { http, timeoutMs, now });
  let resolvedEndpoint = options.endpoint;
  let closed = false;
  const known: MetadataStore | undefined = options.metadata_file === undefined ? undefined : openMetadataStore(options.metadata_file, deps.warn ? { warn: deps.warn } : {});

  async function endpointFor(ctx: RequestContext): Promise<string> {
    if (resolvedEndpoint !== undefined) return resolvedEndpoint;
    if (keystone === undefined) throw keyError('E_INVALID_ARGUMENT', 'No Barbican endpoint is configured');
    const query = { serviceType: 'key-manager', interface: options.endpoint_type, ...(options.region_name ? { region: options.region_name } : {}) };
    resolvedEndpoint = await keystone.endpoint(query, ctx.projectId, ctx.token);
    return resolvedEndpoint;
  }

  /** Barbican's API root for `endpoint`: ".../v1", whether or not the catalog URL already ends in it. */
  const apiBase = (endpoint: string) => {
    const trimmed = endpoint.replace(/\/+$/, '');
    return trimmed.endsWith(`/${options.api_version}`) ? trimmed : `${trimmed}/${options.api_version}`;
  };

  async function authHeaders(ctx: RequestContext): Promise<{ headers: Record<string, string>; serviceToken?: string }> {
    const headers: Record<string, string> = {};
    if (options.auth.type === 'none') headers['x-project-id'] = ctx.projectId;
    if (ctx.token !== undefined) return { headers: { ...headers, 'x-auth-token': ctx.token } };
    if (keystone === undefined) return { headers };
    const serviceToken = await keystone.serviceToken(ctx.projectId);
    return { headers: { ...headers, 'x-auth-token': serviceToken }, serviceToken };
  }

  function checkContext(ctx: RequestContext): void {
    if (closed) throw keyError('E_BACKEND_UNAVAILABLE', 'The Barbican key manager was closed', { details: { requestSent: false } });
    if (!headerSafe.test(ctx.projectId)) throw keyError('E_INVALID_ARGUMENT', 'The project id must be 1 to 4096 printable ASCII characters without spaces; nothing was sent');
    if (ctx.token !== undefined && !headerSafe.test(ctx.token)) throw keyError('E_INVALID_ARGUMENT', 'The Keystone token is not a valid header value; nothing was sent');
  }

  /**
   * One Barbican request with auth. A 401 on the service's cached token gets
   * one fresh token and one resend (401 means Barbican did nothing); a 401 on
   * a caller's token is final. 408/429/5xx become E_BACKEND_UNAVAILABLE, left
   * to the retrying wrapper.
   */
  async function call(ctx: RequestContext, c: Call): Promise<{ res: HttpResponse; req: HttpRequest }> {
    checkContext(ctx);
    // Keystone's token and catalog lookups are shared by every caller, so one caller's deadline does not cancel them; it only stops waiting.
    const url = new URL(apiBase(await beforeDeadline(ctx, endpointFor(ctx))) + c.path);
    const send = async () => {
      const auth = await beforeDeadline(ctx, authHeaders(ctx));
      const headers: Record<string, string> = { ...c.headers, ...auth.headers, accept: c.accept ?? 'application/json' };
      if (c.body !== undefined) headers['content-type'] = 'application/json';
      const req: HttpRequest = { method: c.method, url, service: 'Barbican', headers, timeoutMs: c.timeoutMs ?? timeoutMs, signal: ctx.signal };
      if (c.body !== undefined) req.body = c.body;
      if (c.secret === true) req.secretBody = deps.allocator;
      return { res: await http.request(req), serviceToken: auth.serviceToken, req };
    };
    let { res, serviceToken, req } = await send();
    if (res.status === 401 && serviceToken !== undefined) {
      keystone?.invalidate(serviceToken);
      ({ res, serviceToken, req } = await send());
    }
    if (res.status >= 200 && res.status < 300) return { res, req };
    throw statusError({ call: c, req, res, projectId: ctx.projectId, serviceToken, now: now() });
  }

  const json = async (ctx: RequestContext, c: Call): Promise<Record<string, unknown>> => {
    const { res, req } = await call(ctx, c);
    const body = jsonBody(req, res);
    if (typeof body !== 'object' || body === null) throw keyError('E_BACKEND_PROTOCOL', `Barbican answered ${c.method} ${c.path} with JSON that is not an object`);
    return body as Record<string, unknown>;
  };

  /**
   * Submits an order, polls it (once, then up to number_of_retries more
   * times, retry_delay apart) and hands the ACTIVE order to `finish`.
   */
  async function runOrder<T>(ctx: RequestContext, order: unknown, finish: (active: Record<string, unknown>) => Promise<T>): Promise<T> {
    const submitted = await json(ctx, { method: 'POST', path: '/orders', body: Buffer.from(JSON.stringify(order)) });
    const orderId = uuidOfRef(submitted['order_ref'], 'orders');
    try {
      return await finish(await pollOrder(ctx, orderId));
    } catch (err) {
      if (!isTransient(err)) throw err;
      // The order exists now. Whatever this failure's own requestSent says, resending
      // the create would make a second key, so tell the retrying wrapper it was sent.
      throw keyError('E_BACKEND_UNAVAILABLE', `Barbican accepted order ${orderId}, then failed while it was followed up: ${(err as Error).message}`, {
        details: { requestSent: true, orderId },
        cause: err,
      });
    }
  }

  async function pollOrder(ctx: RequestContext, orderId: string): Promise<Record<string, unknown>> {
    let status: unknown = 'unknown';
    for (let attempt = 0; attempt <= options.number_of_retries; attempt += 1) {
      if (attempt > 0) await new Promise((resolve) => setTimeout(resolve, options.retry_delay * 1000));
      const current = await json(ctx, { method: 'GET', path: `/orders/${orderId}` });
      status = current['status'];
      if (status === 'ACTIVE') return current;
      if (status === 'ERROR') {
        const code = String(current['error_status_code'] ?? '?');
        const reason = String(current['error_reason'] ?? 'no reason given');
        throw keyError('E_KEY_CREATE_FAILED', `Barbican order ${orderId} ended in ERROR (${code}): ${reason}`, { details: { orderId, errorStatusCode: code } });
      }
    }
    const polls = options.number_of_retries + 1;
    throw keyError(
      'E_KEY_CREATE_FAILED',
      `Barbican order ${orderId} is still ${String(status)} after ${polls} polls ${options.retry_delay} s apart; is barbican-worker running? (raise number_of_retries or retry_delay to wait longer)`,
      { details: { orderId, status, polls } },
    );
  }

  /** GET /secrets/{uuid}, remembered in the metadata store when there is one. */
  async function fetchMetadata(ctx: RequestContext, uuid: string): Promise<SecretMetadata> {
    const parsed = parseSecretMetadata(await json(ctx, { method: 'GET', path: `/secrets/${uuid}`, secretId: uuid }));
    if (known !== undefined && resolvedEndpoint !== undefined) {
      const { algorithm, bitLength } = parsed.meta;
      known.record(apiBase(resolvedEndpoint), ctx.projectId, uuid, { type: parsed.type, ...(algorithm !== undefined ? { algorithm } : {}), ...(bitLength !== undefined ? { bitLength } : {}) });
    }
    return parsed;
  }

  return {
    name: 'barbican',
    capabilities: { createKeyPair: true, storeAny: true, deletes: true, projectScoped: true },
    consumers: barbicanConsumers(json),
    async createKey(ctx, spec) {
      return runOrder(ctx, keyOrder(spec.algorithm, spec.length, spec.name), async (order) => uuidOfRef(order['secret_ref'], 'secrets'));
    },
    async createKeyPair(ctx, spec) {
      return runOrder(ctx, keyPairOrder(spec.algorithm, spec.length, spec.name), async (order) => {
        const containerId = uuidOfRef(order['container_ref'], 'containers');
        const container = await json(ctx, { method: 'GET', path: `/containers/${containerId}` });
        const refs = Array.isArray(container['secret_refs']) ? (container['secret_refs'] as Array<{ name?: unknown; secret_ref?: unknown }>) : [];
        const ref = (name: string) => uuidOfRef(refs.find((r) => r.name === name)?.secret_ref, 'secrets');
        return { privateKeyId: ref('private_key'), publicKeyId: ref('public_key') };
      });
    },
    async store(ctx, obj) {
      if (!objectTypes.includes(obj.type)) throw keyError('E_INVALID_ARGUMENT', `Unknown object type ${String(obj.type)}; nothing was sent`);
      const body = storeBody(obj);
      try {
        const created = await json(ctx, { method: 'POST', path: '/secrets', body });
        return uuidOfRef(created['secret_ref'], 'secrets');
      } finally {
        body.fill(0);
      }
    },
    async get(ctx, id, getOptions) {
      const uuid = secretUuid(id);
      // A metadata-only get always asks Barbican: answering it from the store would skip Barbican's check that this caller may read it.
      if (getOptions?.metadataOnly === true) return objectFromMetadata(await fetchMetadata(ctx, uuid), undefined);
      checkContext(ctx);
      const base = known && apiBase(await beforeDeadline(ctx, endpointFor(ctx)));
      const stored = base === undefined ? undefined : known?.get(base, ctx.projectId, uuid);
      const forget = () => base !== undefined && known?.drop(base, ctx.projectId, uuid);
      // Known metadata: the payload alone, which Barbican authorizes like any other request.
      const parsed: SecretMetadata = stored === undefined ? await fetchMetadata(ctx, uuid) : fromStore(uuid, stored);
      let res: HttpResponse;
      try {
        ({ res } = await call(ctx, { method: 'GET', path: `/secrets/${uuid}/payload`, secretId: uuid, secret: true, accept: 'application/octet-stream' }));
      } catch (err) {
        if (stored !== undefined && err instanceof KeyClientError && (err.code === 'E_KEY_NOT_FOUND' || err.code === 'E_KEY_FORBIDDEN')) forget();
        throw err;
      }
      if (res.secret === undefined) throw keyError('E_BACKEND_PROTOCOL', `Barbican sent no payload for secret ${uuid}`);
      try {
        checkPayloadLength(uuid, parsed.type, parsed.meta.bitLength, res.secret);
      } catch (err) {
        // Most likely an answer cut short; but should the stored length be wrong, the next get asks Barbican for it again.
        if (stored !== undefined) forget();
        throw err;
      }
      const secret = storedAsPem(parsed.type) ? pemToDer(parsed.type, res.secret, deps.allocator) : res.secret;
      return objectFromMetadata(parsed, secret);
    },
    async delete(ctx, id) {
      const uuid = secretUuid(id);
      try {
        await call(ctx, { method: 'DELETE', path: `/secrets/${uuid}`, secretId: uuid });
      } finally {
        if (resolvedEndpoint !== undefined) known?.drop(apiBase(resolvedEndpoint), ctx.projectId, uuid);
      }
    },
    async list(ctx, listOptions = {}) {
      const maxPages = 1000;
      const found: ManagedObject[] = [];
      let offset = 0;
      for (let page = 0; page < maxPages; page += 1) {
        // Barbican clamps limit to its max_limit_paging: page by what came back, until it stops offering `next`.
        const query = new URLSearchParams({ limit: '100', offset: String(offset) });
        if (listOptions.type !== undefined) query.set('secret_type', listOptions.type);
        if (listOptions.name !== undefined) query.set('name', listOptions.name);
        const body = await json(ctx, { method: 'GET', path: `/secrets?${query.toString()}` });
        const secrets = Array.isArray(body['secrets']) ? (body['secrets'] as unknown[]) : [];
        for (const entry of secrets) {
          const parsed = parseSecretMetadata(entry);
          // Barbican filters names with SQL LIKE ("_" and "%" are wildcards, case ignored): keep exact matches only.
          if (listOptions.name !== undefined && parsed.meta.name !== listOptions.name) continue;
          if (listOptions.type !== undefined && parsed.type !== listOptions.type) continue;
          found.push(objectFromMetadata(parsed, undefined));
        }
        offset += secrets.length;
        if (secrets.length === 0 || body['next'] === undefined) return found;
      }
      throw keyError('E_BACKEND_PROTOCOL', `Barbican kept paging past ${offset} secrets for project ${ctx.projectId}; narrow the list by type or name`);
    },
    async health() {
      if (closed) return { ok: false, detail: 'The Barbican key manager was closed' };
      const healthTimeoutMs = Math.min(timeoutMs, 5000);
      try {
        if (resolvedEndpoint === undefined && keystone !== undefined) {
          // Per-project tokens: there is no catalog to read until a request names its project.
          await keystone.ping(healthTimeoutMs);
          return { ok: true, detail: "Keystone is reachable; Barbican's endpoint is looked up in its catalog with the first request" };
        }
        const root = new URL(`${apiBase(resolvedEndpoint as string).slice(0, -options.api_version.length)}`);
        const res = await http.request({ method: 'GET', url: root, service: 'Barbican', headers: { accept: 'application/json' }, timeoutMs: healthTimeoutMs });
        // The version document answers 300 Multiple Choices.
        if (res.status >= 400) return { ok: false, detail: `Barbican at ${root.origin} answered ${res.status} to GET ${root.pathname}` };
        return { ok: true, detail: `Barbican at ${root.origin} is reachable (${res.status})` };
      } catch (err) {
        return { ok: false, detail: err instanceof Error ? err.message : String(err) };
      }
    },
    async close() {
      closed = true;
      known?.close();
      keystone?.close();
      http.close();
    },
  };
}

/** A secret's metadata as the store knows it: no name and no creation time, which the store does not keep. */
function fromStore(uuid: string, stored: StoredMetadata): SecretMetadata {
  const meta: SecretMetadata['meta'] = { id: uuid };
  if (stored.algorithm !== undefined) meta.algorithm = stored.algorithm;
  if (stored.bitLength !== undefined) meta.bitLength = stored.bitLength;
  return { type: stored.type, meta };
}

interface FailedCall {
  call: Call;
  req: HttpRequest;
  res: HttpResponse;
  projectId: string;
  /** Set when the request carried the service's own token rather than the caller's. */
  serviceToken: string | undefined;
  now: number;
}

/**
 * A symmetric key's bytes must be what its metadata says. An answer cut short
 * where the cut looks like the end (a proxy that sends no Content-Length and
 * closes cleanly when its upstream fails) would otherwise be a shorter key:
 * and a blank volume formatted with it could never be opened with the real one.
 * @throws E_BACKEND_PROTOCOL, having wiped the bytes
 */
function checkPayloadLength(uuid: string, type: string, bitLength: number | undefined, secret: SecretBuffer): void {
  if (type !== 'symmetric' || bitLength === undefined || secret.length * 8 === bitLength) return;
  const got = secret.length;
  secret.wipe();
  throw keyError('E_BACKEND_PROTOCOL', `Barbican sent ${got} bytes for a ${bitLength}-bit symmetric key (secret ${uuid}): the answer was cut short or the secret's metadata is wrong; refusing to use it`, {
    details: { id: uuid, bytes: got, bitLength },
  });
}

/**
 * `work`, or E_BACKEND_UNAVAILABLE as soon as the caller's deadline passes,
 * whichever comes first.
 */
function beforeDeadline<T>(ctx: RequestContext, work: Promise<T>): Promise<T> {
  const signal = ctx.signal;
  if (signal === undefined) return work;
  const late = () => keyError('E_BACKEND_UNAVAILABLE', "Keystone was still being asked for a token or the catalog when the caller's deadline passed; nothing was sent to Barbican", {
    details: { requestSent: false, deadline: true },
  });
  if (signal.aborted) {
    work.catch(() => undefined);
    return Promise.reject(late());
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(late());
    signal.addEventListener('abort', onAbort, { once: true });
    const done = () => signal.removeEventListener('abort', onAbort);
    work.then(
      (value) => {
        done();
        resolve(value);
      },
      (err: unknown) => {
        done();
        reject(err);
      },
    );
  });
}

/** A non-2xx Barbican answer as the KeyClientError the contract names. */
function statusError(f: FailedCall): KeyClientError {
  const { res, req, call: c } = f;
  const reason = safeReason(res, c.body);
  const said = reason ? `: ${reason}` : '';
  const what = `${c.method} ${req.url.pathname}`;
  const details = { status: res.status, ...(c.secretId ? { id: c.secretId } : {}) };
  if (isUnavailableStatus(res.status)) return unavailableStatusError(req, res, f.now, reason);
  if (res.status === 401) {
    const whose = f.serviceToken === undefined ? "the request's token" : 'a freshly issued service token';
    return keyError('E_BACKEND_AUTH', `Barbican at ${req.url.origin} rejected ${whose} (401) for ${what}${said}`, { details });
  }
  if (res.status === 403) return keyError('E_KEY_FORBIDDEN', `Barbican refused ${what} for project ${f.projectId} (403)${said}`, { details });
  if (res.status === 404 && c.secretId !== undefined) {
    return keyError('E_KEY_NOT_FOUND', `Barbican has no secret ${c.secretId} for project ${f.projectId}`, { details });
  }
  if (res.status === 400 || res.status === 413) return keyError('E_INVALID_ARGUMENT', `Barbican rejected ${what} (${res.status})${said}`, { details });
  return keyError('E_BACKEND_PROTOCOL', `Barbican at ${req.url.origin} answered ${res.status} to ${what}${said}; is the endpoint a Barbican v1 API?`, { details });
}

/**
 * Barbican's error text, unless it quotes what we sent: a schema error
 * echoes the offending value, and in a store that could be the payload.
 * Compared as bytes, so the payload never becomes a string here.
 */
function safeReason(res: HttpResponse, sent: Buffer | undefined): string {
  const reason = errorText(res);
  if (sent === undefined || reason === '') return reason;
  const said = Buffer.from(reason);
  const window = 12;
  for (let i = 0; i + window <= sent.length; i += window) {
    if (said.indexOf(sent.subarray(i, i + window)) !== -1) {
      said.fill(0);
      return "(Barbican's reason withheld: it quotes the request body)";
    }
  }
  return reason;
}
