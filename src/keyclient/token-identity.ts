/**
 * Who a Keystone token speaks for, so the key cache can serve a key to a new
 * token of the same principal without asking Barbican again (nova sends a
 * new user token with every request). A principal is what Barbican's
 * decision depends on: user, project, roles, and the application credential
 * or trust the token came through. The token validates itself (Keystone's
 * `identity:validate_token` allows a token's own subject), so no service
 * identity is involved. See docs/nova.md for why this does not weaken
 * Barbican's per-secret ACLs.
 */
import { createHash } from 'node:crypto';
import { keyError } from './errors.js';

export interface TokenPrincipal {
  userId: string;
  projectId: string;
  /** A digest of everything the principal is; equal for two tokens Barbican cannot tell apart. */
  key: string;
  /** Milliseconds since the epoch: until then this answer is reused (the token's expiry, or sooner). */
  expiresAt: number;
}

/**
 * Resolves a token to its principal; undefined when Keystone could not be
 * asked (the cache then keys by the token itself, as without this).
 * @throws E_BACKEND_AUTH when Keystone says the token is not valid (expired, revoked, forged).
 */
export type TokenIdentity = (token: string, signal?: AbortSignal) => Promise<TokenPrincipal | undefined>;

interface TokenBody {
  token?: {
    expires_at?: unknown;
    user?: { id?: unknown };
    project?: { id?: unknown };
    roles?: Array<{ id?: unknown }>;
    application_credential?: { id?: unknown };
    'OS-TRUST:trust'?: { id?: unknown };
  };
}

/** Tokens remembered at most; the oldest goes first. */
const MAX_TOKENS = 4096;

/**
 * `rememberMs`: how long one token's answer is reused (bounded by the token's
 * expiry), so a revocation is seen within it, as keystonemiddleware's own
 * token cache in front of Barbican does (300 s by default).
 */
export function keystoneTokenIdentity(authUrl: string, options: { now?: () => number; timeoutMs?: number; rememberMs?: number } = {}): TokenIdentity {
  const now = options.now ?? Date.now;
  const rememberMs = options.rememberMs ?? 300_000;
  const timeoutMs = options.timeoutMs ?? 10_000;
  const url = `${authUrl.replace(/\/+$/, '')}/auth/tokens?nocatalog`;
  const known = new Map<string, TokenPrincipal>();

  return async (token, signal) => {
    const digest = createHash('sha256').update(token).digest('base64url');
    const hit = known.get(digest);
    if (hit !== undefined && now() < hit.expiresAt) return hit;
    known.delete(digest);
    let res: Response;
    try {
      const deadline = AbortSignal.timeout(timeoutMs);
      res = await fetch(url, { headers: { 'x-auth-token': token, 'x-subject-token': token, accept: 'application/json' }, signal: signal === undefined ? deadline : AbortSignal.any([signal, deadline]) });
    } catch {
      return undefined;
    }
    if (res.status === 401 || res.status === 404) {
      throw keyError('E_BACKEND_AUTH', `Keystone at ${new URL(url).origin} says the request's token is not valid (${res.status}); refusing`, { details: { status: res.status } });
    }
    if (res.status !== 200) return undefined;
    const body = (await res.json().catch(() => ({}))) as TokenBody;
    const t = body.token;
    const expiresAt = typeof t?.expires_at === 'string' ? Date.parse(t.expires_at) : Number.NaN;
    if (typeof t?.user?.id !== 'string' || typeof t.project?.id !== 'string' || Number.isNaN(expiresAt)) return undefined; // unscoped or odd: no sharing
    const roles = (t.roles ?? []).map((r) => String(r.id)).sort();
    const via = [t.application_credential?.id ?? null, t['OS-TRUST:trust']?.id ?? null];
    const key = createHash('sha256').update(JSON.stringify([t.user.id, t.project.id, roles, via])).digest('base64url');
    const principal: TokenPrincipal = { userId: t.user.id, projectId: t.project.id, key, expiresAt: Math.min(expiresAt, now() + rememberMs) };
    known.set(digest, principal);
    for (const oldest of known.keys()) {
      if (known.size <= MAX_TOKENS) break;
      known.delete(oldest);
    }
    return principal;
  };
}
