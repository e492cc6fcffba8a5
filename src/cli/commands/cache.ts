import type { CacheAnswer } from '../../api/wire.js';
import { normaliseId } from '../../keyclient/cache.js';
import { exitCodes, type Command, type CommandInput } from '../command.js';
import { connectDaemon } from '../daemon-session.js';
import { ratio } from '../format.js';
import { printFields, printJson, UsageError } from '../output.js';

/** The daemon's key cache (admin role): figures, flush, evict. */

/** What DELETE /v1/cache/{keyId} accepts; a Barbican href is reduced to its UUID first, as the cache does. */
const CACHE_ID = /^[A-Za-z0-9_.:-]{1,512}$/;

/** The cache figures with the hit ratio people ask for first: hits / (hits + misses). */
export function cacheRows(c: CacheAnswer): [string, string][] {
  return [
    ['entries', String(c.entries)],
    ['hit ratio', `${ratio(c.hits, c.hits + c.misses)} (${c.hits} hits, ${c.misses} misses)`],
    ['coalesced', `${c.coalesced} (waited on another caller's fetch)`],
    ['backend fetches', String(c.backend_fetches)],
    ['stale served', `${c.stale_served} (expired keys served while the key manager was unreachable)`],
    ['negative hits', `${c.negative_hits} (cached not-found/forbidden answers)`],
    ['evictions', `${c.evictions} (LRU, to make room)`],
    ['expirations', String(c.expirations)],
  ];
}

const stats: Command = {
  path: ['cache', 'stats'],
  summary: "show the daemon's key-cache figures (admin)",
  usage: '[--json]',
  options: {},
  async run({ values }: CommandInput) {
    const c = await connectDaemon(values).request<CacheAnswer>('GET', '/v1/cache');
    if (values['json'] === true) printJson({ ...c, hit_ratio: c.hits + c.misses > 0 ? c.hits / (c.hits + c.misses) : null });
    else printFields(cacheRows(c));
    return exitCodes.ok;
  },
};

const flush: Command = {
  path: ['cache', 'flush'],
  summary: 'wipe every cached key from daemon memory (admin); later attaches fetch again',
  usage: '[--json]',
  options: {},
  async run({ values }: CommandInput) {
    const answer = await connectDaemon(values).request<{ flushed: number }>('DELETE', '/v1/cache');
    if (values['json'] === true) printJson(answer);
    else process.stdout.write(`flushed ${answer.flushed} cached key(s)\n`);
    return exitCodes.ok;
  },
};

const evict: Command = {
  path: ['cache', 'evict'],
  summary: 'wipe one key from the cache, in every project (admin), e.g. after rotating it',
  usage: 'KEY_ID [--json]',
  positionals: 1,
  options: {},
  async run({ values, positionals }: CommandInput) {
    const given = positionals[0] as string;
    const id = normaliseId(given);
    if (!CACHE_ID.test(id)) throw new UsageError(`"${given}" is not a key id (a UUID or a Barbican secret href)`);
    const answer = await connectDaemon(values).request<{ evicted: number }>('DELETE', `/v1/cache/${id}`);
    if (values['json'] === true) printJson(answer);
    else process.stdout.write(`evicted ${answer.evicted} cache entr${answer.evicted === 1 ? 'y' : 'ies'} of key ${id}\n`);
    return exitCodes.ok;
  },
};

export const cacheCommands: Command[] = [stats, flush, evict];
