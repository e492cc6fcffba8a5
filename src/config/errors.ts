import { errorFamily, type ErrorRegistry } from '../errors.js';

export const configErrors = {
  E_CONFIG_NOT_FOUND: 'The configuration file does not exist or cannot be read.',
  E_CONFIG_SYNTAX: 'The configuration file is not valid YAML (or INI, for nova.conf-style files).',
  E_CONFIG_INVALID: 'The configuration does not match the schema; every problem is listed with its key path.',
} as const satisfies ErrorRegistry;

export type ConfigErrorCode = keyof typeof configErrors;

export interface ConfigIssue {
  /** Dotted key path, e.g. "key_manager.barbican.auth.auth_url". */
  path: string;
  message: string;
}

export class ConfigError extends errorFamily('ConfigError', configErrors) {
  /** Every schema problem, for E_CONFIG_INVALID; empty otherwise. */
  get issues(): ConfigIssue[] {
    const issues = this.details['issues'];
    return Array.isArray(issues) ? (issues as ConfigIssue[]) : [];
  }
}
