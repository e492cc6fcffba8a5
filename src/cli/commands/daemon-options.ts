import type { z } from 'zod';
import { ID_PATTERN, NAME_PATTERN } from '../../api/wire.js';
import { stringOption, type Command, type OptionValues } from '../command.js';
import { UsageError } from '../output.js';

/**
 * Options of the commands that talk to portcullisd, each declared once, and
 * the checks that turn them into Socket API v1 bodies. Bodies are validated
 * with the daemon's own schemas (src/api/wire.ts) before anything is
 * sent, so a bad flag is a usage error (exit 2) that names the flag.
 */

type Option = Command['options'][string];

export const daemonOptions = {
  device: { type: 'string', help: 'block device to open, a /dev path (e.g. /dev/disk/by-id/virtio-...)', valueName: 'DEV' },
  'key-id': { type: 'string', help: 'key id in the key manager (a UUID or a Barbican secret href)', valueName: 'ID' },
  project: { type: 'string', help: 'project (tenant) id the key belongs to; or $PORTCULLIS_PROJECT', valueName: 'P' },
  provider: { type: 'string', help: 'luks, luks2, plain, nop or an os-brick encryptor class name', valueName: 'NAME' },
  cipher: { type: 'string', help: 'cipher when formatting (luks) or mapping (plain), e.g. aes-xts-plain64', valueName: 'C' },
  'key-size': { type: 'string', help: 'key size in bits (cryptsetup --key-size), e.g. 512', valueName: 'BITS' },
  'read-only': { type: 'boolean', help: 'open the mapping read-only' },
  'allow-discards': { type: 'boolean', help: 'pass discards (TRIM) through to the device' },
} as const satisfies Record<string, Option>;

/** Which flag sets each body field, to name it in usage errors. */
const flagOfField: Record<string, string> = {
  device: '--device',
  key: '--key-id',
  'key.id': '--key-id',
  new_key: '--new-key-id',
  'new_key.id': '--new-key-id',
  project_id: '--project',
  provider: '--provider',
  cipher: '--cipher',
  key_size: '--key-size',
  format: '--format',
  key_scope: '--scope',
  'auth.token': '$OS_AUTH_TOKEN',
};

export function projectOf(values: OptionValues): string {
  const project = stringOption(values, 'project') ?? process.env['PORTCULLIS_PROJECT'];
  if (project === undefined || project === '') throw new UsageError('--project P is required (or set PORTCULLIS_PROJECT)');
  return project;
}

export function required(values: OptionValues, name: string, valueName: string): string {
  const value = stringOption(values, name);
  if (value === undefined || value === '') throw new UsageError(`--${name} ${valueName} is required`);
  return value;
}

/** The Keystone token for token pass-through: from $OS_AUTH_TOKEN only, since argv is world-readable in /proc. */
export function authFromEnv(): { auth: { token: string } } | Record<string, never> {
  const token = process.env['OS_AUTH_TOKEN'];
  return token === undefined || token === '' ? {} : { auth: { token } };
}

/** Fields shared by volume and ephemeral attaches, from their flags. */
export function mappingFields(values: OptionValues): Record<string, unknown> {
  const keySize = stringOption(values, 'key-size');
  if (keySize !== undefined && !/^\d+$/.test(keySize)) throw new UsageError(`--key-size wants a whole number of bits, not "${keySize}"`);
  const fields: Record<string, unknown> = {
    provider: stringOption(values, 'provider'),
    cipher: stringOption(values, 'cipher'),
    key_size: keySize === undefined ? undefined : Number(keySize),
    read_only: values['read-only'] === true ? true : undefined,
    allow_discards: values['allow-discards'] === true ? true : undefined,
  };
  return Object.fromEntries(Object.entries(fields).filter(([, v]) => v !== undefined));
}

/**
 * Checks `body` against the daemon's schema and returns it as given (the
 * daemon fills in defaults itself).
 * @throws UsageError naming each bad flag
 */
export function checkedBody<T extends Record<string, unknown>>(schema: z.ZodType, body: T): T {
  const result = schema.safeParse(body);
  if (result.success) return body;
  const problems = result.error.issues.map((issue) => {
    const field = issue.path.map(String).join('.');
    const flag = flagOfField[field] ?? (field === '' ? 'request' : field);
    return `${flag}: ${issue.message}`;
  });
  throw new UsageError(problems.join('; '));
}

/** A volume (mapping) name, as the API accepts it in its path. */
export function volumeName(name: string): string {
  if (!NAME_PATTERN.test(name)) {
    throw new UsageError(`"${name}" is not a valid volume name (1-127 of A-Z a-z 0-9 _ . : + -, starting with a letter or digit)`);
  }
  return name;
}

/** An ephemeral instance or disk id, as the API accepts it in its path. */
export function ephemeralId(id: string, what: 'INSTANCE' | 'DISK'): string {
  if (!ID_PATTERN.test(id)) throw new UsageError(`${what} "${id}" is not valid (1-63 of A-Z a-z 0-9 _ . -, starting with a letter or digit)`);
  return id;
}
