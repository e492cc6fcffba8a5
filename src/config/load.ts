import { readFileSync } from 'node:fs';
import { extname } from 'node:path';
import { parseDocument } from 'yaml';
import type { z } from 'zod';
import { ConfigError, type ConfigIssue } from './errors.js';
import { importCastellanIni } from './castellan-ini.js';
import { configSchema, type Config } from './schema.js';

export const DEFAULT_CONFIG_PATH = '/etc/portcullis/portcullis.yaml';

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

export interface LoadedConfig {
  config: Config;
  /** Where it came from, for messages. */
  source: string;
  /** Non-fatal findings (INI options portcullis ignores, insecure choices), each ending ", ignoring" or similar. */
  warnings: string[];
}

export interface LoadOptions {
  /** Replaces key_manager.backend before validation (CLI --backend). */
  backend?: string;
}

/**
 * Reads, parses and validates a config file once, at the edge. YAML unless the
 * file ends in .conf or .ini, which is read as a nova.conf/Castellan INI.
 * @throws ConfigError E_CONFIG_NOT_FOUND, E_CONFIG_SYNTAX, E_CONFIG_INVALID (all problems at once)
 */
export function loadConfigFile(path: string, options: LoadOptions = {}): LoadedConfig {
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    throw new ConfigError('E_CONFIG_NOT_FOUND', `Cannot read config file ${path} (${code}); pass --config FILE or set PORTCULLIS_CONFIG`, {
      details: { path },
      cause: err,
    });
  }
  let text: string;
  try {
    text = strictUtf8.decode(bytes);
  } catch {
    // A lenient decode would turn the bad bytes into U+FFFD: a path or name that is not what the file says.
    throw new ConfigError('E_CONFIG_SYNTAX', `Config file ${path} is not valid UTF-8; refusing`, { details: { path } });
  }
  const ext = extname(path).toLowerCase();
  if (ext === '.conf' || ext === '.ini') {
    const imported = importCastellanIni(text, path);
    return { ...validateConfig(imported.input, path, options), warnings: imported.warnings };
  }
  return validateConfig(parseYaml(text, path), path, options);
}

export function parseYaml(text: string, source: string): unknown {
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const lines = doc.errors.map((e) => e.message.split('\n')[0]);
    throw new ConfigError('E_CONFIG_SYNTAX', `Config file ${source} is not valid YAML:\n  ${lines.join('\n  ')}`, {
      details: { path: source, errors: lines },
    });
  }
  try {
    return doc.toJS() ?? {};
  } catch (err) {
    // Aliases are resolved here: an undefined one, or an alias bomb (yaml's maxAliasCount), is a syntax error of this file.
    const said = err instanceof Error ? err.message.split('\n')[0] ?? '' : String(err);
    throw new ConfigError('E_CONFIG_SYNTAX', `Config file ${source} is not valid YAML: ${said}`, { details: { path: source, errors: [said] } });
  }
}

/** Validates an already-parsed config object. @throws ConfigError E_CONFIG_INVALID */
export function validateConfig(input: unknown, source: string, options: LoadOptions = {}): LoadedConfig {
  let raw = input;
  if (options.backend !== undefined) {
    const base = isRecord(raw) ? raw : {};
    const km = isRecord(base['key_manager']) ? base['key_manager'] : {};
    raw = { ...base, key_manager: { ...km, backend: options.backend } };
  }
  const result = configSchema.safeParse(raw);
  if (!result.success) throw invalid(source, result.error.issues);
  return { config: Object.freeze(result.data) as Config, source, warnings: [] };
}

function invalid(source: string, zodIssues: readonly z.core.$ZodIssue[]): ConfigError {
  const issues: ConfigIssue[] = zodIssues.flatMap((issue) => flatten(issue));
  const list = issues.map((i) => `  ${i.path || '(top level)'}: ${i.message}`).join('\n');
  return new ConfigError('E_CONFIG_INVALID', `Config ${source} has ${issues.length} problem(s); refusing to start:\n${list}`, {
    details: { path: source, issues },
  });
}

/** Unknown keys arrive as one issue listing several keys; report each key at its own path. */
function flatten(issue: z.core.$ZodIssue): ConfigIssue[] {
  const path = issue.path.map(String).join('.');
  if (issue.code === 'unrecognized_keys') {
    return issue.keys.map((key) => ({ path: path === '' ? key : `${path}.${key}`, message: 'unknown key' }));
  }
  return [{ path, message: issue.message }];
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** The config file to use: --config, then $PORTCULLIS_CONFIG, then the default path. */
export function configPath(flag: string | undefined): string {
  return flag ?? process.env['PORTCULLIS_CONFIG'] ?? DEFAULT_CONFIG_PATH;
}
