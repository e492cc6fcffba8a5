import type { CacheAnswer, HealthAnswer } from '../../api/wire.js';
import { isPortcullisError } from '../../errors.js';
import { exitCodes, type Command, type CommandInput } from '../command.js';
import type { DaemonClient } from '../daemon-client.js';
import { connectDaemon } from '../daemon-session.js';
import { duration, ratio } from '../format.js';
import { printFields, printJson, printTable } from '../output.js';

/** GET /v1/health answers 503 while failing, with the same body: an answer, not an error. */
export function fetchHealth(client: DaemonClient): Promise<HealthAnswer> {
  return client.request<HealthAnswer>('GET', '/v1/health', undefined, { answerStatuses: [503] });
}

function checksLine(h: HealthAnswer): string {
  const failed = Object.entries(h.checks ?? {}).filter(([, c]) => !c.ok).map(([name]) => name);
  return failed.length === 0 ? 'all checks pass' : `failing: ${failed.join(', ')} (portcullis health)`;
}

const status: Command = {
  path: ['status'],
  summary: 'one screen: daemon version and uptime, backend, health, volumes, cache',
  usage: '[--json]',
  notes: "Exits 0 whenever the daemon answered, whatever its health; 'portcullis health' exits by health.",
  options: {},
  async run({ values }: CommandInput) {
    const client = connectDaemon(values);
    const health = await fetchHealth(client);
    // Cache figures need the admin role; an agent-role user still gets the rest of the screen.
    let cache: CacheAnswer | undefined;
    let cacheProblem: string | undefined;
    try {
      cache = await client.request<CacheAnswer>('GET', '/v1/cache');
    } catch (err) {
      if (!isPortcullisError(err, 'E_PEER_FORBIDDEN')) throw err;
      cacheProblem = 'needs the admin role (E_PEER_FORBIDDEN)';
    }
    if (values['json'] === true) {
      printJson({
        socket: client.socketPath,
        ...health,
        cache: cache === undefined ? null : { ...cache, hit_ratio: cache.hits + cache.misses > 0 ? cache.hits / (cache.hits + cache.misses) : null },
      });
      return exitCodes.ok;
    }
    printFields([
      ['daemon', `portcullisd ${health.version}, up ${duration(health.uptime_seconds)}`],
      ['socket', client.socketPath],
      ['health', `${health.status}: ${checksLine(health)}`],
      ['backend', health.backend],
      ['volumes', String(health.volumes)],
      [
        'cache',
        cache === undefined
          ? (cacheProblem ?? '-')
          : `${cache.entries} key(s), hit ratio ${ratio(cache.hits, cache.hits + cache.misses)} (${cache.hits} hits, ${cache.misses} misses), ${cache.stale_served} stale served`,
      ],
    ]);
    return exitCodes.ok;
  },
};

const health: Command = {
  path: ['health'],
  summary: "show the daemon's health checks; the exit code says ok (0) or not (1)",
  usage: '[--json]',
  notes: [
    'Exit codes: 0 ok; 1 degraded (key manager unreachable: cached keys still attach) or failing',
    '(cryptsetup or dm-crypt unusable: nothing can attach); 4 the daemon is unreachable.',
  ].join('\n'),
  options: {},
  async run({ values }: CommandInput) {
    const h = await fetchHealth(connectDaemon(values));
    if (values['json'] === true) {
      printJson(h);
    } else {
      process.stdout.write(`status: ${h.status} (portcullisd ${h.version}, up ${duration(h.uptime_seconds)}, backend ${h.backend}, ${h.volumes} volume(s))\n`);
      printTable(['CHECK', 'OK', 'DETAIL'], Object.entries(h.checks ?? {}).map(([name, c]) => [name, c.ok ? 'ok' : 'FAIL', c.detail]));
    }
    return h.status === 'ok' ? exitCodes.ok : exitCodes.failed;
  },
};

export const healthCommands: Command[] = [status, health];
