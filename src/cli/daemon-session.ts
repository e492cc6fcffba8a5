import { existsSync } from 'node:fs';
import { configPath, loadConfigFile, type LoadedConfig } from '../config/load.js';
import { ConfigError } from '../config/errors.js';
import { DEFAULT_SOCKET_PATH } from '../config/daemon-options.js';
import { isPortcullisError } from '../errors.js';
import { stringOption, type OptionValues } from './command.js';
import { daemonClient, DEFAULT_TIMEOUT_MS, type DaemonClient } from './daemon-client.js';
import { UsageError } from './output.js';

/** The config the CLI found, if any: named (--config, $PORTCULLIS_CONFIG) or at the default path. */
export interface FoundConfig {
  path: string;
  /** Named by --config or $PORTCULLIS_CONFIG: then it must exist. */
  named: boolean;
  loaded: LoadedConfig | undefined;
}

/**
 * Loads the config when one is named or the default file exists; a named
 * file that is missing or invalid is an error (exit 3), never a silent
 * fallback that would talk to some other daemon.
 * @throws ConfigError E_CONFIG_NOT_FOUND, E_CONFIG_SYNTAX, E_CONFIG_INVALID
 */
export function findConfig(values: OptionValues): FoundConfig {
  const flag = stringOption(values, 'config');
  const env = process.env['PORTCULLIS_CONFIG'];
  const named = flag !== undefined || (env !== undefined && env !== '');
  const path = configPath(flag);
  if (!named && !existsSync(path)) return { path, named, loaded: undefined };
  try {
    const loaded = loadConfigFile(path);
    for (const warning of loaded.warnings) process.stderr.write(`portcullis: warning: ${warning}\n`);
    return { path, named, loaded };
  } catch (err) {
    if (isPortcullisError(err, 'E_CONFIG_NOT_FOUND')) {
      throw new ConfigError('E_CONFIG_NOT_FOUND', `${err.message}; or name the daemon's socket with --socket PATH`, { details: err.details, cause: err });
    }
    throw err;
  }
}

export interface SocketTarget {
  path: string;
  /** Where the path came from, for messages: "--socket", "socket.path in FILE", "the default". */
  origin: string;
}

/** --socket, else socket.path of the config, else /run/portcullis/portcullis.sock. */
export function findSocket(values: OptionValues, found?: FoundConfig): SocketTarget {
  const flag = stringOption(values, 'socket');
  if (flag !== undefined) {
    if (flag === '') throw new UsageError('--socket wants a path');
    return { path: flag, origin: '--socket' };
  }
  const config = found ?? findConfig(values);
  if (config.loaded !== undefined) return { path: config.loaded.config.socket.path, origin: `socket.path in ${config.path}` };
  return { path: DEFAULT_SOCKET_PATH, origin: `the default; no config at ${config.path}` };
}

const MAX_TIMEOUT_SECONDS = 86_400;

/** --timeout SECONDS (fractions allowed), default 330. */
export function timeoutMs(values: OptionValues): number {
  const raw = stringOption(values, 'timeout');
  if (raw === undefined) return DEFAULT_TIMEOUT_MS;
  const seconds = /^\d+(\.\d+)?$/.test(raw) ? Number(raw) : Number.NaN;
  if (!(seconds > 0 && seconds <= MAX_TIMEOUT_SECONDS)) throw new UsageError(`--timeout wants seconds between 0 and ${MAX_TIMEOUT_SECONDS}, not "${raw}"`);
  return Math.round(seconds * 1000);
}

/** A client for the daemon the options point at. */
export function connectDaemon(values: OptionValues, found?: FoundConfig): DaemonClient {
  const target = findSocket(values, found);
  return daemonClient(target.path, { timeoutMs: timeoutMs(values), origin: target.origin });
}
