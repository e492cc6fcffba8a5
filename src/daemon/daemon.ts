import { performance } from 'node:perf_hooks';
import { dirname, join } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import type { Config } from '../config/schema.js';
import { loadConfigFile } from '../config/load.js';
import type { CachingKeyManager } from '../keyclient/cache.js';
import { openCachedKeyManager } from '../keyclient/open.js';
import type { SecureAllocator } from '../util/secure-memory.js';
import { createLuksDriver } from '../luks/driver.js';
import type { DeviceOps } from '../luks/device/ops.js';
import type { PeerReader } from './api/peer.js';
import { createApiServer } from './api/server.js';
import { admission, limitedRunner } from './limits.js';
import { createLogger, type Logger } from './log.js';
import { createMetrics } from './metrics.js';
import { ephemeralService } from './service/ephemeral.js';
import { healthService } from './service/health.js';
import { volumeRegistry } from './volume-registry.js';
import { volumeService } from './service/volumes.js';
import { serviceLocks } from './service/lock-keys.js';
import { listenSocket, type Listening } from './socket.js';
import { startWatchdog } from './watchdog.js';
import { connectHelper } from './helper.js';
import { dropPrivileges, lookupAccount } from './privileges.js';
import type { HelperTransport } from '../luks/helper/transport.js';
import { armedKillStep, KILL_ENV } from './service/kill-point.js';

export interface DaemonDeps {
  /** The privileged device operations: in-process on this host, or the test VM's guest agent (test/vm) through its channel. */
  ops: DeviceOps;
  readPeer: PeerReader;
  allocator: SecureAllocator;
  version: string;
  /**
   * Starts (or reaches) the privileged helper (luks.via: helper): a
   * socketpair child in production, the one beside the test VM's kernel in
   * tests. Absent: the helper is not available and luks.via must be cryptsetup.
   */
  helper?: (options: { path: string | undefined; socket: string | undefined; symlinkDirs: readonly string[]; log: (line: string) => void }) => HelperTransport;
  /** Told READY, STATUS, RELOADING, STOPPING (sd_notify); a no-op outside systemd. */
  notify?: (state: string) => void;
  logStream?: NodeJS.WritableStream & { isTTY?: boolean };
}

export interface Daemon {
  listening: Listening;
  log: Logger;
  /** Re-reads the config file; a bad one is logged and the running config kept. */
  reload(): Promise<boolean>;
  /** Stops taking requests, drains in-flight ones (up to the grace period), wipes the cache. Safe to call twice. */
  close(): Promise<void>;
}

/**
 * Builds and starts portcullisd from a validated config: key manager stack
 * cache(retry(backend)), LUKS driver over a bounded runner, services, the
 * socket API. Adopts the kernel's crypt mappings before it listens, so no
 * request can race the adoption.
 */
export async function startDaemon(configPath: string, initial: Config, deps: DaemonDeps): Promise<Daemon> {
  let config = initial;
  const startedAt = Date.now();
  const log = createLogger(config.log, deps.logStream);
  const notify = deps.notify ?? (() => undefined);
  const keyDeps = { allocator: deps.allocator, warn: (message: string) => log.warn(message, {}) };
  // The helper first, while this process may still be root: it keeps the devices; the daemon then needs no root.
  const helper = await connectHelper(config, deps, log);
  if (config.runtime.user !== undefined) {
    const warning = dropPrivileges(lookupAccount(config.runtime.user));
    if (warning !== undefined) log.warn(warning, {});
    else log.info('gave up root', { user: config.runtime.user, uid: process.getuid?.() ?? null });
  }
  let keys: CachingKeyManager = await openCachedKeyManager(config, keyDeps);
  const runner = limitedRunner(deps.ops, config.limits.max_concurrent_commands);
  const inHelper = () => helper?.client.stats() ?? { inFlight: 0, stuck: 0 };
  const metrics = createMetrics(() => keys.stats(), () => ({ active: runner.active + inHelper().inFlight, stuck: runner.stuck + inHelper().stuck }));
  // Only commands count against the limit: the in-process questions cost no process.
  const commandOps: DeviceOps = { ...deps.ops, run: (argv, options) => runner.run(argv, options) };
  const ops = helper === undefined ? commandOps : helper.ops(commandOps);
  const driver = createLuksDriver({ ops, ...(helper === undefined ? {} : { crypt: helper.crypt }), allocator: deps.allocator, timeoutMs: config.limits.command_timeout_seconds * 1000 });
  // Records name devices by major:minor, which mean something only within one boot of the kernel that has the devices.
  const [bootId] = await ops.readFiles(['/proc/sys/kernel/random/boot_id']);
  const registry = volumeRegistry(config.runtime.volumes_file ?? join(dirname(config.socket.path), 'volumes.json'), log, { bootId });
  const serviceDeps = {
    keys: () => keys,
    backend: () => config.key_manager.backend,
    luks: () => config.luks,
    driver,
    log,
    metrics,
    registry,
  };
  const locks = serviceLocks();
  const volumes = volumeService(serviceDeps, locks);
  const ephemeral = ephemeralService(serviceDeps, locks);
  const health = healthService({ keys: () => keys, backend: () => config.key_manager.backend, driver, version: deps.version, startedAt, volumes: () => registry.size, commands: () => ({ limit: runner.limit, stuck: runner.stuck + inHelper().stuck }), requests: () => ({ overrun: api.overrun }) });

  const t = performance.now();
  const { adopted, foreign } = await volumes.adopt().catch((err: unknown) => {
    // Without device-mapper nothing can be adopted, and nothing attached either: health says so.
    log.warn('cannot list the kernel crypt mappings at start, ignoring', { error: err instanceof Error ? err.message : String(err) });
    return { adopted: 0, foreign: 0 };
  });
  let stopping = false;
  const api = createApiServer({
    volumes,
    ephemeral,
    health,
    keys: () => keys,
    metrics,
    roles: () => config.roles,
    limits: () => config.limits,
    readPeer: deps.readPeer,
    admission: admission(() => config.limits.max_pending_requests),
    readAdmission: admission(() => config.limits.max_pending_reads),
    log,
    stopping: () => stopping,
  });
  const listening = await listenSocket(api.server, config.socket);
  const kill = armedKillStep();
  if (kill !== undefined) log.warn('armed to SIGKILL itself for a crash test; never set this outside tests', { [KILL_ENV]: kill });
  if (listening.replacedStale) log.warn('replaced a stale socket left by an earlier run', { path: listening.path });
  const backendHealth = await keys.health().catch(() => ({ ok: false, detail: 'unreachable' }));
  if (!backendHealth.ok) log.warn('key manager not usable at start; attaches will fail until it is', { backend: config.key_manager.backend, detail: backendHealth.detail });
  log.info('portcullisd ready', { socket: listening.path, via: listening.how, backend: config.key_manager.backend, adopted, foreign, start_ms: Math.round(performance.now() - t) });
  notify(`READY=1\nSTATUS=serving on ${listening.path}, backend ${config.key_manager.backend}, ${adopted} mapping(s) adopted`);
  // What no request needed before READY loads now, off the start's path (prom-client: metrics.ts).
  metrics.load().catch((err: unknown) => log.error('cannot load the metrics registry; GET /metrics will fail', { error: err instanceof Error ? err.message : String(err) }));
  // systemd arms the watchdog at READY=1 (WatchdogSec= in the unit); a no-op without $WATCHDOG_USEC.
  const watchdog = startWatchdog({ notify, log });

  let closing: Promise<void> | undefined;
  // Reloads run one at a time: two quick SIGHUPs must not open two managers and lose one.
  let reloading: Promise<unknown> = Promise.resolve();
  // Replaced key managers stay open until no request can still be using one (a fetch in flight).
  const retired = new Set<CachingKeyManager>();
  const retire = (old: CachingKeyManager): void => {
    retired.add(old);
    const timer = setTimeout(() => {
      retired.delete(old);
      void old.close();
    }, (config.limits.request_timeout_seconds + 1) * 1000);
    timer.unref();
  };
  async function reload(): Promise<boolean> {
    notify('RELOADING=1');
    try {
      const next = loadConfigFile(configPath).config;
      if (!isDeepStrictEqual(next.socket, config.socket)) log.warn('socket settings change only on restart, ignoring them', {});
      if (!isDeepStrictEqual(next.runtime, config.runtime)) log.warn('runtime.volumes_file changes only on restart, ignoring it', {});
      if (!isDeepStrictEqual(next.limits.max_concurrent_commands, config.limits.max_concurrent_commands)) log.warn('limits.max_concurrent_commands changes only on restart, ignoring it', {});
      const keysChanged = !isDeepStrictEqual([next.key_manager, next.cache, next.retry], [config.key_manager, config.cache, config.retry]);
      if (keysChanged) {
        const old = keys;
        keys = await openCachedKeyManager(next, keyDeps);
        retire(old);
      }
      config = next;
      api.applyLimits();
      log.setLevel(config.log.level);
      log.info('config reloaded', { path: configPath, key_manager_reopened: keysChanged });
      return true;
    } catch (err) {
      log.error('config reload failed; keeping the running config', { path: configPath, error: err instanceof Error ? err.message : String(err) });
      return false;
    } finally {
      notify('READY=1');
    }
  }
  return {
    listening,
    log,
    reload() {
      const next = reloading.then(reload);
      reloading = next.catch(() => undefined);
      return next;
    },
    close() {
      closing ??= (async () => {
        stopping = true;
        watchdog.stop();
        notify('STOPPING=1');
        log.info('portcullisd stopping: draining in-flight requests', { grace_seconds: config.limits.shutdown_grace_seconds });
        const closed = new Promise<void>((resolve) => api.server.close(() => resolve()));
        api.server.closeIdleConnections();
        let timer: NodeJS.Timeout | undefined;
        const grace = new Promise<void>((resolve) => {
          timer = setTimeout(resolve, config.limits.shutdown_grace_seconds * 1000);
        });
        await Promise.race([api.drained(), grace]);
        clearTimeout(timer);
        api.server.closeAllConnections();
        await closed;
        await keys.close();
        for (const old of retired) await old.close();
        retired.clear();
        // The helper exits when its socket closes; nothing of it outlives the daemon.
        helper?.client.close();
        log.info('portcullisd stopped', {});
        await log.close();
      })();
      return closing;
    },
  };
}
