import type { KeyManager } from '../../keyclient/key-manager.js';
import type { LuksDriver } from '../../luks/driver.js';
import type { HealthAnswer, HealthCheck } from '../../api/wire.js';
import { codeOf } from './context.js';

export interface HealthDeps {
  keys(): Pick<KeyManager, 'health'>;
  backend(): string;
  driver: Pick<LuksDriver, 'version' | 'cryptTarget'>;
  version: string;
  startedAt: number;
  volumes(): number;
  /** The privileged command slots: how many there are, and how many are stuck. */
  commands(): { limit: number; stuck: number };
  /** Requests answered at their deadline whose work still runs (each holds an admission slot). */
  requests(): { overrun: number };
  /** The clock of the caches below. @default Date.now */
  now?: () => number;
}

/** Host facts change rarely and cost a process each (seconds under emulation): ask at most this often. */
const HOST_CHECK_TTL_MS = 30_000;
/** A failing host check is asked again after this long. */
const FAILED_CHECK_TTL_MS = 2_000;
const BACKEND_TIMEOUT_MS = 5_000;
/**
 * The key manager's answer is reused this long after it came: health is open
 * to every agent, and each probe is a request to Barbican or KMIP (or a
 * keystore read). Short, so an outage shows within seconds.
 */
export const BACKEND_CHECK_TTL_MS = 2_000;

/**
 * Readiness with per-check detail. cryptsetup and dm-crypt missing means no
 * attach can work: failing. A key manager that is down leaves cached keys
 * usable: degraded.
 */
export function healthService(deps: HealthDeps) {
  const clock = deps.now ?? Date.now;
  let host: { at: number; checks: Promise<Record<string, HealthCheck>> } | undefined;
  /** The last key-manager probe; `at` once it answered. Concurrent calls share one that is under way. */
  let probe: { at?: number; check: Promise<HealthCheck> } | undefined;

  async function hostChecks(): Promise<Record<string, HealthCheck>> {
    const cryptsetup = deps.driver.version().then(
      (v) => ({ ok: true, detail: `cryptsetup ${v.version}` }),
      // With the helper, its libcryptsetup's version; with luks.via: cryptsetup, the CLI's. The error's own words say which failed.
      (err: unknown) => ({ ok: false, detail: `cryptsetup unusable (${codeOf(err)}): ${err instanceof Error ? err.message : String(err)}` }),
    );
    const dm = deps.driver.cryptTarget().then(
      (version) => (version !== undefined ? { ok: true, detail: `dm-crypt v${version}` } : { ok: false, detail: 'device-mapper has no crypt target: modprobe dm-crypt' }),
      (err: unknown) => ({ ok: false, detail: `device-mapper unusable (${codeOf(err)}): ${err instanceof Error ? err.message : String(err)}` }),
    );
    return { cryptsetup: await cryptsetup, dm_crypt: await dm };
  }

  async function backendCheck(): Promise<HealthCheck> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<HealthCheck>((resolve) => {
      timer = setTimeout(() => resolve({ ok: false, detail: `no answer within ${BACKEND_TIMEOUT_MS / 1000} s` }), BACKEND_TIMEOUT_MS);
    });
    try {
      return await Promise.race([
        deps.keys().health().then(
          (h) => ({ ok: h.ok, detail: h.detail }),
          (err: unknown) => ({ ok: false, detail: `unreachable (${codeOf(err)})` }),
        ),
        timeout,
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  function backendProbe(now: number): Promise<HealthCheck> {
    if (probe !== undefined && (probe.at === undefined || now - probe.at <= BACKEND_CHECK_TTL_MS)) return probe.check;
    const next: { at?: number; check: Promise<HealthCheck> } = { check: backendCheck() };
    void next.check.then(() => (next.at = clock()));
    probe = next;
    return next.check;
  }

  return async function health(): Promise<HealthAnswer> {
    const now = clock();
    if (host === undefined || now - host.at > HOST_CHECK_TTL_MS) host = { at: now, checks: hostChecks() };
    const [hostResults, backend] = await Promise.all([host.checks, backendProbe(now)]);
    const { limit, stuck } = deps.commands();
    const commands: HealthCheck =
      stuck === 0
        ? { ok: true, detail: `${limit} command slot(s), none stuck` }
        : { ok: false, detail: `${stuck} of ${limit} command slot(s) held by commands stuck in the kernel past their timeout (uninterruptible I/O: check the devices and dmesg)` };
    const { overrun } = deps.requests();
    const requests: HealthCheck =
      overrun === 0
        ? { ok: true, detail: 'no request runs past its deadline' }
        : { ok: false, detail: `${overrun} request(s) answered 504 E_REQUEST_TIMEOUT still run, each holding its admission slot until it ends (slow devices or key manager?)` };
    const checks: Record<string, HealthCheck> = { ...hostResults, commands, requests, key_manager: backend };
    // A failed host check is asked again soon, not after 30 s, so a fix shows at once; but not on every call:
    // health is open to agents, and each ask spawns cryptsetup and dmsetup (measured: 2,967 req/s, bench/key-cache).
    if (Object.values(hostResults).some((c) => !c.ok) && host !== undefined && host.at === now) host = { ...host, at: now - HOST_CHECK_TTL_MS + FAILED_CHECK_TTL_MS };
    // Every slot stuck: nothing can run. Some: attaches still work, slower.
    const failing = Object.values(hostResults).some((c) => !c.ok) || stuck >= limit;
    const status = failing ? 'failing' : backend.ok && commands.ok && requests.ok ? 'ok' : 'degraded';
    return {
      status,
      version: deps.version,
      uptime_seconds: Math.round((now - deps.startedAt) / 1000),
      backend: deps.backend(),
      volumes: deps.volumes(),
      checks,
    };
  };
}
