import { ConfigError } from './errors.js';

/**
 * Reads the key-manager part of a nova.conf / Castellan INI so that a host
 * already configured for os-brick + Castellan can point portcullis at the same
 * file. Only [key_manager] and [barbican] matter; every other section is
 * nova's business and is skipped without comment.
 */
export interface ImportedIni {
  /** A config object in portcullis' own (YAML) shape, still to be validated. */
  input: Record<string, unknown>;
  warnings: string[];
}

type Sections = Map<string, Map<string, string>>;

/** Castellan's backend names and class paths → portcullis backends. */
const backendAliases: Record<string, 'barbican' | 'fixed' | 'local'> = {
  barbican: 'barbican',
  'castellan.key_manager.barbican_key_manager.barbicankeymanager': 'barbican',
  'nova.keymgr.conf_key_mgr.confkeymanager': 'fixed',
  'cinder.keymgr.conf_key_mgr.confkeymanager': 'fixed',
  confkeymanager: 'fixed',
  local: 'local',
};

/** [barbican] option → path in portcullis' barbican section, with its type. */
const barbicanOptions: Record<string, { key: string; type: 'string' | 'int' | 'bool' }> = {
  barbican_endpoint: { key: 'endpoint', type: 'string' },
  barbican_api_version: { key: 'api_version', type: 'string' },
  number_of_retries: { key: 'number_of_retries', type: 'int' },
  retry_delay: { key: 'retry_delay', type: 'int' },
  verify_ssl: { key: 'verify_ssl', type: 'bool' },
  verify_ssl_path: { key: 'verify_ssl_path', type: 'string' },
  barbican_endpoint_type: { key: 'endpoint_type', type: 'string' },
  barbican_region_name: { key: 'region_name', type: 'string' },
};

/** Castellan's [key_manager] credential options that map onto password auth. */
const passwordOptions = ['username', 'password', 'user_domain_name', 'project_name', 'project_id', 'project_domain_name'];

export function importCastellanIni(text: string, source: string): ImportedIni {
  const sections = parseIni(text, source);
  const warnings: string[] = [];
  const km = sections.get('key_manager') ?? new Map<string, string>();
  const bar = sections.get('barbican') ?? new Map<string, string>();

  const backendRaw = km.get('backend') ?? 'barbican'; // Castellan's default
  const backend = backendAliases[backendRaw.toLowerCase()];
  if (backend === undefined) {
    throw new ConfigError(
      'E_CONFIG_INVALID',
      `${source}: [key_manager] backend = ${backendRaw} is not supported by portcullis (supported: barbican, fixed via ConfKeyManager, local); refusing`,
      { details: { path: source, issues: [{ path: 'key_manager.backend', message: `unsupported backend ${backendRaw}` }] } },
    );
  }

  const keyManager: Record<string, unknown> = { backend };
  if (backend === 'fixed' || km.has('fixed_key')) {
    const fixed: Record<string, unknown> = { allow_insecure: true };
    const key = km.get('fixed_key');
    if (key !== undefined) fixed['key'] = key;
    keyManager['fixed'] = fixed;
    if (backend === 'fixed') {
      // Nova already runs this way; refusing would only stop the host. Say it loudly instead.
      warnings.push(
        `${source}: nova's ConfKeyManager gives every volume the same fixed_key; accepted because nova already uses it — move off it with \`portcullis key migrate --from fixed --to local\``,
      );
    }
  }

  const barbican: Record<string, unknown> = {};
  for (const [option, value] of bar) {
    const mapping = barbicanOptions[option];
    if (mapping === undefined) {
      warnings.push(`${source}: [barbican] ${option} has no portcullis equivalent, ignoring`);
      continue;
    }
    barbican[mapping.key] = convert(value, mapping.type);
  }
  barbican['auth'] = barbicanAuth(km, bar, warnings, source);
  if (backend === 'barbican') keyManager['barbican'] = barbican;

  return { input: { key_manager: keyManager }, warnings };
}

/**
 * Castellan acts with the caller's token unless [key_manager] auth_type asks
 * for service credentials; portcullis does the same (token pass-through).
 */
function barbicanAuth(km: Map<string, string>, bar: Map<string, string>, warnings: string[], source: string): Record<string, unknown> {
  // Castellan's default auth_endpoint; deprecated [key_manager] auth_url is its old name.
  const authUrl = bar.get('auth_endpoint') ?? km.get('auth_url') ?? 'http://localhost/identity/v3';
  const authType = (km.get('auth_type') ?? 'token').toLowerCase();
  if (authType === 'password' || authType === 'keystone_password') {
    const auth: Record<string, unknown> = { type: 'password', auth_url: authUrl };
    for (const option of passwordOptions) {
      const value = km.get(option);
      if (value !== undefined) auth[option] = value;
    }
    return auth;
  }
  if (authType !== 'token' && authType !== 'keystone_token') {
    warnings.push(`${source}: [key_manager] auth_type = ${authType} is not supported, using token pass-through instead`);
  }
  if (km.has('token')) warnings.push(`${source}: [key_manager] token is a static token; portcullis uses each request's token, ignoring`);
  return { type: 'token', auth_url: authUrl };
}

function convert(value: string, type: 'string' | 'int' | 'bool'): unknown {
  if (type === 'int') return /^-?\d+$/.test(value) ? Number(value) : value; // the schema reports a non-number
  if (type === 'bool') {
    const lower = value.toLowerCase();
    if (['true', 'yes', 'on', '1'].includes(lower)) return true;
    if (['false', 'no', 'off', '0'].includes(lower)) return false;
    return value;
  }
  return value;
}

/** oslo.config's INI dialect: [section], key = value, # and ; comments, indented continuation lines. */
export function parseIni(text: string, source: string): Sections {
  const sections: Sections = new Map();
  let current: Map<string, string> | undefined;
  let lastKey: string | undefined;
  const lines = text.split(/\r?\n/);
  for (const [index, line] of lines.entries()) {
    if (/^\s*([#;].*)?$/.test(line)) continue;
    const section = /^\[([^\]]+)\]\s*$/.exec(line);
    if (section) {
      const name = (section[1] as string).trim().toLowerCase();
      current = sections.get(name) ?? new Map<string, string>();
      sections.set(name, current);
      lastKey = undefined;
      continue;
    }
    if (/^\s/.test(line) && current !== undefined && lastKey !== undefined) {
      current.set(lastKey, `${current.get(lastKey) ?? ''}\n${line.trim()}`);
      continue;
    }
    const pair = /^([^=:\s][^=:]*?)\s*[=:]\s*(.*)$/.exec(line);
    if (!pair || current === undefined) {
      throw new ConfigError('E_CONFIG_SYNTAX', `${source} line ${index + 1} is not INI ("key = value" inside a [section]): ${line.slice(0, 60)}`, {
        details: { path: source, line: index + 1 },
      });
    }
    lastKey = (pair[1] as string).trim();
    current.set(lastKey, (pair[2] as string).trim());
  }
  return sections;
}
