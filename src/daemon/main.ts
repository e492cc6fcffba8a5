import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { configPath, loadConfigFile } from '../config/load.js';
import { isPortcullisError } from '../errors.js';
import { memlockLimit } from '../../native/index.js';
import { startDaemon, type DaemonDeps } from './daemon.js';
import { hostMemlockFacts, memlockWarning } from './memlock.js';

/** portcullisd exit codes, documented in portcullisd(8) (docs/man/portcullisd.8). */
export const daemonExitCodes = { ok: 0, failed: 1, usage: 2, config: 3 } as const;

const HELP = `Usage: portcullisd [--config FILE] [--check-config]

portcullis daemon: opens dm-crypt/LUKS volumes for the hypervisor agent with
keys from the key manager, over a unix socket (API v1, docs/api.md).

Options:
  --config FILE     config file (YAML, or nova.conf-style .conf/.ini);
                    default $PORTCULLIS_CONFIG or /etc/portcullis/portcullis.yaml
  --check-config    validate the config, print a summary, and exit
  --version         print the version
  -h, --help        show this help

Signals: SIGTERM/SIGINT drain in-flight requests and stop; SIGHUP reloads the config
(a bad one is logged and the running config kept).
Exit codes: 0 stopped cleanly, 1 failed at runtime, 2 usage error, 3 bad config (nothing started).`;

export function version(): string {
  return (JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
}

/** Everything the entry point wires in; `hardenProcess` runs before any key can be in memory. */
export interface MainDeps extends Omit<DaemonDeps, 'version'> {
  hardenProcess?: () => string[];
}

export async function main(argv: string[], deps: MainDeps): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: { config: { type: 'string' }, 'check-config': { type: 'boolean' }, version: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
      strict: true,
    }));
  } catch (err) {
    process.stderr.write(`portcullisd: ${err instanceof Error ? err.message : String(err)}\nTry 'portcullisd --help'.\n`);
    return daemonExitCodes.usage;
  }
  if (values.help === true) {
    process.stdout.write(`${HELP}\n`);
    return daemonExitCodes.ok;
  }
  if (values.version === true) {
    process.stdout.write(`portcullisd ${version()}\n`);
    return daemonExitCodes.ok;
  }
  const path = configPath(values.config);
  let loaded;
  try {
    loaded = loadConfigFile(path);
  } catch (err) {
    process.stderr.write(`portcullisd: ${isPortcullisError(err) ? `${err.code}: ` : ''}${err instanceof Error ? err.message : String(err)}\n`);
    return daemonExitCodes.config;
  }
  for (const warning of loaded.warnings) process.stderr.write(`portcullisd: warning: ${warning}\n`);
  if (values['check-config'] === true) {
    const c = loaded.config;
    process.stdout.write(`config OK: ${path}\n  backend ${c.key_manager.backend}, socket ${c.socket.path} (mode ${c.socket.mode.toString(8).padStart(4, '0')}${c.socket.group === undefined ? '' : `, group ${String(c.socket.group)}`})\n  cache ttl ${c.cache.ttl_seconds} s, max ${c.cache.max_entries} keys; luks pbkdf ${c.luks.pbkdf}/${c.luks.pbkdf_iterations}\n`);
    return daemonExitCodes.ok;
  }
  const hardening = deps.hardenProcess?.() ?? [];
  // Keys live in mlock'ed pages (native/): say at start if a full cache cannot fit, not at the Nth attach.
  const memlock = deps.allocator.kind === 'locked' ? memlockWarning(loaded.config, hostMemlockFacts(memlockLimit())) : undefined;
  // Signals are caught before start: a SIGTERM during start-up (systemctl stop right after READY)
  // must still drain and say STOPPING, not kill the process with the default action.
  let stopSignal: string | undefined;
  let onStop: (signal: string) => void = (signal) => (stopSignal ??= signal);
  let onReload: () => void = () => undefined;
  process.once('SIGTERM', () => onStop('SIGTERM'));
  process.once('SIGINT', () => onStop('SIGINT'));
  process.on('SIGHUP', () => onReload());
  let daemon: Awaited<ReturnType<typeof startDaemon>>;
  try {
    daemon = await startDaemon(path, loaded.config, { ...deps, version: version() });
  } catch (err) {
    process.stderr.write(`portcullisd: cannot start: ${isPortcullisError(err) ? `${err.code}: ` : ''}${err instanceof Error ? err.message : String(err)}\n`);
    return isPortcullisError(err) && err.code.startsWith('E_CONFIG_') ? daemonExitCodes.config : daemonExitCodes.failed;
  }
  for (const note of hardening) daemon.log.warn(note, {});
  if (memlock !== undefined) daemon.log.warn(memlock.message, memlock.fields);
  const started = daemon;
  return new Promise<number>((resolve) => {
    onStop = (signal: string) => {
      started.log.info('signal received', { signal });
      void started.close().then(() => resolve(daemonExitCodes.ok));
    };
    onReload = () => void started.reload();
    if (stopSignal !== undefined) onStop(stopSignal);
  });
}
