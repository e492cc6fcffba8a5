import type { CachingKeyManager } from '../../keyclient/cache.js';
import type { LuksDriver } from '../../luks/driver.js';
import type { HealthAnswer, HealthCheck } from '../../api/wire.js';
import { codeOf } from './context.js';

export interface HealthDeps {
  keys(): CachingKeyManager;
  backend(): string;
  driver: LuksDriver;
  version: string;
  startedAt: number;
  volumes(): number;
  /** The privileged command slots: how many there are, and how many are stuck. */
  commands(): { limit: number; stuck: number };
}

/** Host facts change rarely and cost a process each (seconds under emulation): ask at most this often. */
const HOST_CHECK_TTL_MS = 30_000;
/** A failing host check is asked again after this long. */
const FAILED_CHECK_TTL_MS = 2_000;
const BACKEND_TIMEOUT_MS = 5_000;

/**
 * Readiness with per-check detail. cryptsetup and dm-crypt missing means no
 * attach can work: failing. A key manager that is down leaves cached keys
 * usable: degraded.
 */
export function healthService(deps: HealthDeps) {
  let host: { at: number; checks: Promise<Record<string, HealthCheck>> } | undefined;

  async function hostChecks(): Promise<Record<string, HealthCheck>> {
    const cryptsetup = deps.driver.version().then(
      (v) => ({ ok: true, detail: `cryptsetup ${v.version}` }),
      (err: unknown) => ({ ok: false, detail: `cryptsetup unusable (${codeOf(err)}): install cryptsetup-bin` }),
    );
    const dm = deps.driver.cryptTarget().then(
      (version) => (version !== undefined ? { ok: true, detail: `dm-crypt v${version}` } : { ok: false, detail: 'device-mapper has no crypt target: modprobe dm-crypt' }),
      () => ({ ok: false, detail: 'dmsetup cannot run: install dmsetup' }),
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

  return async function health(): Promise<HealthAnswer> {
    const now = Date.now();
    if (host === undefined || now - host.at > HOST_CHECK_TTL_MS) host = { at: now, checks: hostChecks() };
    const [hostResults, backend] = await Promise.all([host.checks, backendCheck()]);
    const { limit, stuck } = deps.commands();
    const commands: HealthCheck =
      stuck === 0
        ? { ok: true, detail: `${limit} command slot(s), none stuck` }
        : { ok: false, detail: `${stuck} of ${limit} command slot(s) held by commands stuck in the kernel past their timeout (uninterruptible I/O: check the devices and dmesg)` };
    const checks: Record<string, HealthCheck> = { ...hostResults, commands, key_manager: backend };
    // A failed host check is asked again soon, not after 30 s, so a fix shows at once; but not on every call:
    // health is open to agents, and each ask spawns cryptsetup and dmsetup (measured: 2,967 req/s, bench/key-cache).
    if (Object.values(hostResults).some((c) => !c.ok) && host !== undefined && host.at === now) host = { ...host, at: now - HOST_CHECK_TTL_MS + FAILED_CHECK_TTL_MS };
    // Every slot stuck: nothing can run. Some: attaches still work, slower.
    const failing = Object.values(hostResults).some((c) => !c.ok) || stuck >= limit;
    const status = failing ? 'failing' : backend.ok && commands.ok ? 'ok' : 'degraded';
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
