import { keyError } from '../../errors.js';
import { errorText, isUnavailableStatus, jsonBody, unavailableStatusError, type HttpClient, type HttpRequest, type HttpResponse } from './http.js';

/**
 * A Keystone v3 session for a key-manager backend: issues and caches the
 * service's own tokens and finds service endpoints in the catalog. Tokens a
 * caller brings (token pass-through) are never cached here; they are the
 * caller's.
 */
export type KeystoneCredentials =
  | {
      type: 'password';
      authUrl: string;
      username: string;
      password: string;
      userDomainName: string;
      /** Fixed scope. Without projectName/projectId, each request's project is the scope. */
      projectName?: string;
      projectId?: string;
      projectDomainName: string;
    }
  | { type: 'application_credential'; authUrl: string; id: string; secret: string }
  /** Pass-through only: every request brings its own token. */
  | { type: 'token'; authUrl: string };

export interface EndpointQuery {
  serviceType: string;
  interface: 'public' | 'internal' | 'admin';
  region?: string;
}

export interface KeystoneSession {
  /**
   * The service's token for acting on `projectId` (ignored when the
   * credentials fix the scope), cached until shortly before it expires.
   * @throws E_BACKEND_AUTH, E_BACKEND_UNAVAILABLE, E_BACKEND_PROTOCOL;
   *   E_INVALID_ARGUMENT for token-only credentials.
   */
  serviceToken(projectId: string): Promise<string>;
  /** Forgets a token the service rejected, so the next call authenticates again. */
  invalidate(token: string): void;
  /**
   * The URL of a service from the catalog: the caller's (`userToken`) when
   * given, else the service token's. Resolved once, then remembered.
   * @throws E_BACKEND_AUTH when the catalog has no matching endpoint.
   */
  endpoint(query: EndpointQuery, projectId: string, userToken?: string): Promise<string>;
  /** GET of the identity API root. @throws E_BACKEND_UNAVAILABLE */
  ping(timeoutMs: number): Promise<void>;
  close(): void;
}

export interface KeystoneDeps {
  http: HttpClient;
  timeoutMs: number;
  now: () => number;
}

interface CatalogEndpoint {
  interface?: string;
  region?: string;
  region_id?: string;
  url?: string;
}
interface CatalogService {
  type?: string;
  endpoints?: CatalogEndpoint[];
}
interface CachedToken {
  token: string;
  refreshAt: number;
  catalog: CatalogService[];
}

/** Tokens are refreshed this long before they expire (or at half their life, if shorter). */
const refreshMarginMs = 60_000;
/** One cached token per project scope; beyond this many projects the oldest is dropped. */
const maxCachedScopes = 1000;

export function createKeystoneSession(creds: KeystoneCredentials, deps: KeystoneDeps): KeystoneSession {
  const base = identityBase(creds.authUrl);
  const tokens = new Map<string, CachedToken>();
  const pending = new Map<string, Promise<CachedToken>>();
  const endpoints = new Map<string, string>();

  const scopeOf = (projectId: string): string =>
    creds.type === 'password' && creds.projectId === undefined && creds.projectName === undefined ? `project:${projectId}` : 'fixed';

  async function issue(projectId: string): Promise<CachedToken> {
    const url = new URL(`${base}/auth/tokens`);
    const req: HttpRequest = {
      method: 'POST',
      url,
      service: 'Keystone',
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      body: Buffer.from(JSON.stringify(authBody(creds, projectId))),
      timeoutMs: deps.timeoutMs,
    };
    const issuedAt = deps.now();
    let res: HttpResponse;
    try {
      res = await deps.http.request(req);
    } finally {
      req.body?.fill(0); // it holds the password or secret
    }
    if (isUnavailableStatus(res.status)) throw unavailableStatusError(req, res, deps.now());
    if (res.status !== 201 && res.status !== 200) {
      const { subject, hint } = who(creds, projectId);
      throw keyError('E_BACKEND_AUTH', `Keystone at ${url.origin} refused to authenticate ${subject} (${res.status}: ${errorText(res) || 'no reason given'}); ${hint}`, {
        details: { status: res.status },
      });
    }
    const token = res.headers['x-subject-token'];
    const body = jsonBody(req, res) as { token?: { expires_at?: unknown; catalog?: unknown } };
    const expiresAt = typeof body.token?.expires_at === 'string' ? Date.parse(body.token.expires_at) : Number.NaN;
    if (typeof token !== 'string' || token === '' || Number.isNaN(expiresAt)) {
      throw keyError('E_BACKEND_PROTOCOL', `Keystone at ${url.origin} issued no usable token (missing X-Subject-Token or expires_at)`);
    }
    const margin = Math.min(refreshMarginMs, Math.max(0, (expiresAt - issuedAt) / 2));
    const catalog = Array.isArray(body.token?.catalog) ? (body.token.catalog as CatalogService[]) : [];
    return { token, refreshAt: expiresAt - margin, catalog };
  }

  /** Single-flight per scope: a thousand concurrent requests make one token request. */
  async function cached(projectId: string): Promise<CachedToken> {
    if (creds.type === 'token') {
      throw keyError('E_INVALID_ARGUMENT', 'auth type "token" acts only with the request\'s own Keystone token, and this request carries none');
    }
    const scope = scopeOf(projectId);
    const hit = tokens.get(scope);
    if (hit !== undefined && deps.now() < hit.refreshAt) return hit;
    const inFlight = pending.get(scope);
    if (inFlight !== undefined) return inFlight;
    const promise = issue(projectId)
      .then((fresh) => {
        tokens.delete(scope);
        tokens.set(scope, fresh);
        if (tokens.size > maxCachedScopes) tokens.delete(tokens.keys().next().value as string);
        return fresh;
      })
      .finally(() => pending.delete(scope));
    pending.set(scope, promise);
    return promise;
  }

  async function userCatalog(userToken: string): Promise<CatalogService[]> {
    const req: HttpRequest = {
      method: 'GET',
      url: new URL(`${base}/auth/catalog`),
      service: 'Keystone',
      headers: { 'x-auth-token': userToken, accept: 'application/json' },
      timeoutMs: deps.timeoutMs,
    };
    const res = await deps.http.request(req);
    if (isUnavailableStatus(res.status)) throw unavailableStatusError(req, res, deps.now());
    if (res.status !== 200) {
      throw keyError('E_BACKEND_AUTH', `Keystone at ${req.url.origin} refused the request's token when asked for the catalog (${res.status}: ${errorText(res) || 'no reason given'})`, {
        details: { status: res.status },
      });
    }
    const body = jsonBody(req, res) as { catalog?: unknown };
    return Array.isArray(body.catalog) ? (body.catalog as CatalogService[]) : [];
  }

  return {
    async serviceToken(projectId) {
      return (await cached(projectId)).token;
    },
    invalidate(token) {
      for (const [scope, entry] of tokens) if (entry.token === token) tokens.delete(scope);
    },
    async endpoint(query, projectId, userToken) {
      const key = `${query.serviceType}|${query.interface}|${query.region ?? ''}`;
      const known = endpoints.get(key);
      if (known !== undefined) return known;
      const catalog = userToken !== undefined ? await userCatalog(userToken) : (await cached(projectId)).catalog;
      const url = findEndpoint(catalog, query);
      if (url === undefined) {
        const region = query.region === undefined ? '' : ` in region ${query.region}`;
        throw keyError('E_BACKEND_AUTH', `Keystone's catalog at ${base} has no ${query.interface} endpoint for service type ${query.serviceType}${region}; check endpoint_type and region_name, or set endpoint`, {
          details: { ...query },
        });
      }
      endpoints.set(key, url);
      return url;
    },
    async ping(timeoutMs) {
      const req: HttpRequest = { method: 'GET', url: new URL(base), service: 'Keystone', headers: { accept: 'application/json' }, timeoutMs };
      const res = await deps.http.request(req);
      if (isUnavailableStatus(res.status)) throw unavailableStatusError(req, res, deps.now());
    },
    close() {
      tokens.clear();
      endpoints.clear();
    },
  };
}

/** Keystone's v3 root from an auth_url given with or without the /v3 suffix. */
export function identityBase(authUrl: string): string {
  const trimmed = authUrl.replace(/\/+$/, '');
  return /\/v3$/.test(trimmed) ? trimmed : `${trimmed}/v3`;
}

function authBody(creds: KeystoneCredentials, projectId: string): unknown {
  if (creds.type === 'application_credential') {
    return { auth: { identity: { methods: ['application_credential'], application_credential: { id: creds.id, secret: creds.secret } } } };
  }
  if (creds.type !== 'password') throw keyError('E_INVALID_ARGUMENT', 'Token-only credentials cannot authenticate');
  const project =
    creds.projectId !== undefined
      ? { id: creds.projectId }
      : creds.projectName !== undefined
        ? { name: creds.projectName, domain: { name: creds.projectDomainName } }
        : { id: projectId };
  return {
    auth: {
      identity: { methods: ['password'], password: { user: { name: creds.username, domain: { name: creds.userDomainName }, password: creds.password } } },
      scope: { project },
    },
  };
}

function who(creds: KeystoneCredentials, projectId: string): { subject: string; hint: string } {
  if (creds.type === 'application_credential') {
    return { subject: `application credential ${creds.id}`, hint: 'check the id and secret, and that the credential has not expired or been deleted' };
  }
  if (creds.type !== 'password') return { subject: 'the request', hint: 'check auth_url' };
  const scope = creds.projectId ?? creds.projectName ?? projectId;
  return {
    subject: `user ${creds.username} (domain ${creds.userDomainName}) for project ${scope}`,
    hint: 'check the password, and that the user has a role in that project',
  };
}

function findEndpoint(catalog: CatalogService[], query: EndpointQuery): string | undefined {
  for (const service of catalog) {
    if (service.type !== query.serviceType) continue;
    for (const endpoint of service.endpoints ?? []) {
      if (endpoint.interface !== query.interface || typeof endpoint.url !== 'string') continue;
      if (query.region !== undefined && endpoint.region !== query.region && endpoint.region_id !== query.region) continue;
      return endpoint.url;
    }
  }
  return undefined;
}
