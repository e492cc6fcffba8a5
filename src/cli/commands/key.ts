import { readFileSync } from 'node:fs';
import type { ManagedObject, ObjectType } from '../../keyclient/objects/index.js';
import { objectOfType, objectTypes } from '../../keyclient/objects/index.js';
import { adoptSecret, plainAllocator } from '../../util/secure-memory.js';
import { exitCodes, stringOption, type Command, type CommandInput } from '../command.js';
import { requestContext, withKeyManager } from '../key-manager-session.js';
import { printJson, printTable, UsageError } from '../output.js';
import { keyAdoptCommand } from './key-adopt.js';
import { keyMigrateCommand } from './key-migrate.js';

const project = { type: 'string', help: 'project (tenant) id the key belongs to; or $PORTCULLIS_PROJECT', valueName: 'P' } as const;

const storableTypes: Record<string, ObjectType> = { symmetric: 'symmetric', passphrase: 'passphrase', opaque: 'opaque' };
const MAX_STDIN_BYTES = 64 * 1024;

function metadataRow(obj: ManagedObject): Record<string, unknown> {
  return {
    id: obj.id,
    type: obj.type,
    name: obj.name ?? null,
    algorithm: obj.algorithm ?? null,
    bit_length: obj.bitLength ?? null,
    created: obj.created?.toISOString() ?? null,
  };
}

function integer(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d+$/.test(value)) throw new UsageError(`${flag} wants a whole number, not "${value}"`);
  return Number(value);
}

const create: Command = {
  path: ['key', 'create'],
  summary: 'create a symmetric key in the key manager and print its id',
  usage: '--project P [--algorithm aes] [--length 256] [--name N]',
  options: {
    project,
    algorithm: { type: 'string', help: 'algorithm (default aes)', valueName: 'ALG' },
    length: { type: 'string', help: 'key length in bits (default 256; 512 for AES-256-XTS)', valueName: 'BITS' },
    name: { type: 'string', help: 'a name to find the key by later', valueName: 'N' },
  },
  async run({ values }: CommandInput) {
    const ctx = requestContext(values);
    const spec = {
      algorithm: stringOption(values, 'algorithm') ?? 'aes',
      length: integer(stringOption(values, 'length'), '--length') ?? 256,
      ...(stringOption(values, 'name') === undefined ? {} : { name: stringOption(values, 'name') as string }),
    };
    const id = await withKeyManager(values, (km) => km.createKey(ctx, spec));
    if (values['json'] === true) printJson({ id });
    else process.stdout.write(`${id}\n`);
    return exitCodes.ok;
  },
};

const store: Command = {
  path: ['key', 'store'],
  summary: 'store the bytes on standard input as a key, passphrase or opaque object',
  usage: '--type symmetric|passphrase|opaque --project P [--name N] [--algorithm aes] < FILE',
  options: {
    type: { type: 'string', help: 'object type: symmetric, passphrase or opaque', valueName: 'T' },
    project,
    name: { type: 'string', help: 'a name to find it by later', valueName: 'N' },
    algorithm: { type: 'string', help: 'algorithm of a symmetric key (default aes)', valueName: 'ALG' },
  },
  async run({ values }: CommandInput) {
    const typeName = stringOption(values, 'type');
    const type = typeName === undefined ? undefined : storableTypes[typeName];
    if (type === undefined) throw new UsageError('--type must be symmetric, passphrase or opaque');
    const ctx = requestContext(values);
    const input = readFileSync(0);
    if (input.length === 0) throw new UsageError('nothing on standard input to store');
    if (input.length > MAX_STDIN_BYTES) throw new UsageError(`standard input holds ${input.length} bytes; the limit is ${MAX_STDIN_BYTES}`);
    const secret = adoptSecret(plainAllocator(), input);
    const name = stringOption(values, 'name');
    const meta =
      type === 'symmetric'
        ? { algorithm: stringOption(values, 'algorithm') ?? 'aes', bitLength: secret.length * 8 }
        : {};
    const obj = objectOfType(type, name === undefined ? meta : { ...meta, name }, secret);
    try {
      const id = await withKeyManager(values, (km) => km.store(ctx, obj));
      if (values['json'] === true) printJson({ id });
      else process.stdout.write(`${id}\n`);
    } finally {
      obj.zeroize();
    }
    return exitCodes.ok;
  },
};

const get: Command = {
  path: ['key', 'get'],
  summary: 'print an object: its bytes as hex (default) or raw, or its metadata and bytes as JSON',
  usage: 'ID --project P [--output hex|raw|json] [--metadata-only]',
  positionals: 1,
  options: {
    project,
    output: { type: 'string', help: 'hex (default), raw or json', valueName: 'FORMAT' },
    'metadata-only': { type: 'boolean', help: 'fetch and print metadata only, never the bytes' },
  },
  async run({ values, positionals }: CommandInput) {
    const id = positionals[0] as string;
    const output = stringOption(values, 'output') ?? (values['json'] === true ? 'json' : 'hex');
    if (!['hex', 'raw', 'json'].includes(output)) throw new UsageError('--output must be hex, raw or json');
    const metadataOnly = values['metadata-only'] === true;
    if (metadataOnly && output !== 'json') throw new UsageError('--metadata-only prints JSON; add --output json');
    const ctx = requestContext(values);
    await withKeyManager(values, async (km) => {
      const obj = await km.get(ctx, id, { metadataOnly });
      try {
        if (output === 'json') {
          printJson({ ...metadataRow(obj), ...(metadataOnly ? {} : { payload_base64: obj.bytes().toString('base64') }) });
        } else if (output === 'raw') {
          process.stdout.write(obj.bytes());
        } else {
          process.stdout.write(`${obj.bytes().toString('hex')}\n`);
        }
      } finally {
        obj.zeroize();
      }
    });
    return exitCodes.ok;
  },
};

const list: Command = {
  path: ['key', 'list'],
  summary: "list the project's objects (metadata only)",
  usage: '--project P [--type T] [--name N] [--json]',
  options: {
    project,
    type: { type: 'string', help: 'only this type: symmetric, passphrase, opaque, private, public, certificate', valueName: 'T' },
    name: { type: 'string', help: 'only objects with this exact name', valueName: 'N' },
  },
  async run({ values }: CommandInput) {
    const ctx = requestContext(values);
    const type = stringOption(values, 'type') as ObjectType | undefined;
    if (type !== undefined && !objectTypes.includes(type)) throw new UsageError(`--type must be one of ${objectTypes.join(', ')}`);
    const name = stringOption(values, 'name');
    const objects = await withKeyManager(values, (km) =>
      km.list(ctx, { ...(type === undefined ? {} : { type }), ...(name === undefined ? {} : { name }) }),
    );
    const rows = objects.map(metadataRow);
    if (values['json'] === true) printJson(rows);
    else printTable(['ID', 'TYPE', 'NAME', 'ALGORITHM', 'BITS', 'CREATED'], rows.map((r) => [r['id'], r['type'], r['name'] ?? '-', r['algorithm'] ?? '-', r['bit_length'] ?? '-', r['created'] ?? '-'].map(String)));
    return exitCodes.ok;
  },
};

const remove: Command = {
  path: ['key', 'delete'],
  summary: 'delete an object from the key manager (volumes under that key become unreadable)',
  usage: 'ID --project P',
  positionals: 1,
  options: { project },
  async run({ values, positionals }: CommandInput) {
    const ctx = requestContext(values);
    const id = positionals[0] as string;
    await withKeyManager(values, (km) => km.delete(ctx, id));
    return exitCodes.ok;
  },
};

export const keyCommands: Command[] = [create, store, get, list, remove, keyAdoptCommand, keyMigrateCommand];
