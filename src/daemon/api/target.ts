import { daemonError } from '../errors.js';
import { quoted } from './answer.js';

/**
 * The request target, taken as sent. Not through `new URL()`: that throws
 * on some targets ("//"), and normalises others ("/v1/volumes/a/../b" would
 * become volume b), so a route could act on a name the caller never wrote.
 * Only the origin form ("/path?query") is accepted; the path is matched
 * byte for byte against the route table, so "..", "%2F" and the like simply
 * match no route.
 */
export interface Target {
  path: string;
  query: URLSearchParams;
}

export function parseTarget(url: string | undefined): Target {
  const raw = url ?? '';
  const q = raw.indexOf('?');
  const path = q < 0 ? raw : raw.slice(0, q);
  if (!path.startsWith('/') || path.startsWith('//')) {
    throw daemonError('E_BAD_REQUEST', `Request target "${quoted(raw)}" is not a path ("/v1/..."); refusing`, { details: { target: quoted(raw) } });
  }
  return { path, query: new URLSearchParams(q < 0 ? '' : raw.slice(q + 1)) };
}

/**
 * Only the query parameters a route takes, each at most once: a misspelt
 * "?defered=true" must not quietly become a plain detach, nor "?erasee=true"
 * a detach that keeps the data readable.
 */
export function checkQuery(query: URLSearchParams, allowed: readonly string[], what: string): void {
  const seen = new Set<string>();
  for (const name of query.keys()) {
    if (!allowed.includes(name)) {
      const takes = allowed.length === 0 ? 'takes no query parameters' : `takes only ${allowed.join(', ')}`;
      throw daemonError('E_BAD_REQUEST', `Unknown query parameter "${quoted(name, 64)}": ${what} ${takes}; refusing`, { details: { parameter: quoted(name, 64), allowed } });
    }
    if (seen.has(name)) throw daemonError('E_BAD_REQUEST', `Query parameter ${name} is given more than once; refusing`, { details: { parameter: name } });
    seen.add(name);
  }
}
