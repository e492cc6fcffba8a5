/**
 * Generators of bad input for the socket API fuzz: random and mutated JSON
 * bodies, odd names in paths, bad device paths. Each generator yields only
 * requests that must be refused (a 4xx): where random data could by chance
 * form a valid request, it is filtered out with the wire schema, so what is
 * asserted is always "refused, in the API's shape".
 */
import fc from 'fast-check';
import type { ZodType } from 'zod';
import { shown, type RawBytes } from './fuzz-kit.js';
import { resolveProvider } from '../../../src/luks/providers/index.js';
import { attachBodySchema, ephemeralAttachBodySchema, ephemeralDetachBodySchema, ID_PATTERN, NAME_PATTERN, resizeBodySchema } from '../../../src/api/wire.js';

/** Whether a provider name means no encryption (os-brick's NoOpEncryptor and its aliases). */
export function isNop(provider: string): boolean {
  try {
    return resolveProvider(provider) === 'nop';
  } catch {
    return false;
  }
}

/** Whether a known provider name is refused for an ephemeral disk, which is LUKS2 only (E_BAD_REQUEST). */
export function notForEphemeral(provider: string): boolean {
  try {
    return resolveProvider(provider) !== 'luks2';
  } catch {
    return false;
  }
}

export interface FuzzWorld {
  /** A key that exists in project p1 of the daemon's keystore. */
  keyId: string;
  /** Real loop devices (holding an ext4 file system, so no provider may use them). */
  loops: string[];
  /** Paths under /dev that are not block devices, or lead elsewhere through symlinks. */
  oddDevices: string[];
}

export type BodyKind = 'attach' | 'resize' | 'ephemeral' | 'erase';

export interface BodyRoute {
  kind: BodyKind;
  method: string;
  path: string;
  schema: ZodType;
}

export const bodyRoutes: readonly BodyRoute[] = [
  { kind: 'attach', method: 'PUT', path: '/v1/volumes/fuzz-vol', schema: attachBodySchema },
  { kind: 'resize', method: 'POST', path: '/v1/volumes/fuzz-vol/resize', schema: resizeBodySchema },
  { kind: 'ephemeral', method: 'PUT', path: '/v1/ephemeral/fuzz-inst/disk0', schema: ephemeralAttachBodySchema },
  { kind: 'erase', method: 'DELETE', path: '/v1/ephemeral/fuzz-inst/disk0?erase=true', schema: ephemeralDetachBodySchema },
];

/** Routes that take no body, or whose valid forms are not input errors here (listing needs device-mapper). */
export const bodylessRoutes: ReadonlyArray<[string, string]> = [
  ['GET', '/v1/health'], ['GET', '/v1/volumes'], ['GET', '/v1/volumes/fuzz-vol'], ['DELETE', '/v1/volumes/fuzz-vol'],
  ['GET', '/v1/cache'], ['DELETE', '/v1/cache'], ['DELETE', '/v1/cache/some-key'], ['GET', '/metrics'],
];

export function validBody(kind: BodyKind, world: FuzzWorld): Record<string, unknown> {
  const key = { id: world.keyId };
  switch (kind) {
    case 'attach':
      return { device: world.loops[0], key, project_id: 'p1', provider: 'luks2', format: 'never' };
    case 'resize':
      return { key, project_id: 'p1' };
    case 'ephemeral':
      return { device: world.loops[1] ?? world.loops[0], project_id: 'p1', key_scope: 'instance', provider: 'luks2' };
    case 'erase':
      return { project_id: 'p1' };
  }
}

/**
 * Strings no field should take quietly: NUL, traversal, separators, lone surrogates, controls, long runs, and
 * the names of Object.prototype's properties as values (a table lookup keyed by request input must use own
 * properties only: "__proto__" as a provider once resolved through the prototype).
 */
export const oddStrings: readonly string[] = [
  '__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', 'valueOf', '', ' ', '\0', 'a\0b', '../', '../../etc/passwd', '/', '//', '\\', '%00', '%2F', '\ud800', 'x\udfffy', '\u202e', '\r\n', '\t', 'ü',
  '$(id)', '`id`', ';ls', '-rf', '--help', 'null', 'true', '0', '-1', '1e400', 'a'.repeat(300), '€'.repeat(100), 'é'.repeat(128),
];

/** Values of every JSON type, to put where another type belongs. */
const anyJson = fc.oneof(
  fc.constantFrom<unknown>(null, true, false, 0, -1, 1.5, 1e308, -0, '', 'x', [], {}, [null], { a: 1 }),
  fc.jsonValue({ maxDepth: 3 }),
);

/** Adds a key to an object even when it is "__proto__": JSON.stringify must see it as sent. */
function withKey(target: Record<string, unknown>, key: string, value: unknown): Record<string, unknown> {
  const copy = { ...target };
  Object.defineProperty(copy, key, { value, enumerable: true, configurable: true, writable: true });
  return copy;
}

function setPath(body: Record<string, unknown>, path: string[], value: unknown, remove = false): Record<string, unknown> {
  const [head, ...rest] = path;
  if (head === undefined) return body;
  if (rest.length === 0) {
    if (remove) {
      const copy = { ...body };
      delete copy[head];
      return copy;
    }
    return withKey(body, head, value);
  }
  const inner = body[head];
  const child = typeof inner === 'object' && inner !== null && !Array.isArray(inner) ? (inner as Record<string, unknown>) : {};
  return withKey(body, head, setPath(child, rest, value, remove));
}

/** Field paths each body kind knows (required and optional), for type and value mutations. */
const fields: Record<BodyKind, string[][]> = {
  attach: [['device'], ['key'], ['key', 'id'], ['key', 'backend'], ['project_id'], ['provider'], ['format'], ['cipher'], ['key_size'], ['read_only'], ['allow_discards'], ['symlink'], ['auth'], ['auth', 'token']],
  resize: [['key'], ['key', 'id'], ['key', 'backend'], ['project_id'], ['auth'], ['auth', 'token']],
  ephemeral: [['device'], ['key'], ['key', 'id'], ['project_id'], ['provider'], ['key_scope'], ['cipher'], ['key_size'], ['read_only'], ['allow_discards'], ['auth']],
  erase: [['project_id'], ['device'], ['key'], ['key', 'id'], ['auth']],
};

/** One change to a body; the body is refused afterwards by the schema, or names a key or project that does not exist. */
function mutation(kind: BodyKind, world: FuzzWorld): fc.Arbitrary<(b: Record<string, unknown>) => Record<string, unknown>> {
  const field = fc.constantFrom(...fields[kind]);
  return fc.oneof(
    // Any value at any field: mostly the wrong type, sometimes an odd string or out-of-range number.
    fc.tuple(field, fc.oneof(anyJson, fc.constantFrom<unknown>(...oddStrings), fc.integer(), fc.double()), fc.string()).map(([path, value]) => (b: Record<string, unknown>) => setPath(b, path, value)),
    // A required field gone.
    field.map((path) => (b: Record<string, unknown>) => setPath(b, path, undefined, true)),
    // An unknown key, at the top or inside key/auth, named oddly.
    fc.tuple(fc.constantFrom<string[]>([], ['key'], ['auth']), fc.oneof(fc.constantFrom('__proto__', 'constructor', 'prototype', 'toString', 'Device', 'device ', 'key.id', ''), fc.string({ maxLength: 40 })), anyJson).map(
      ([at, name, value]) => (b: Record<string, unknown>) => setPath(b, [...at, name], value),
    ),
    // Devices that are not block devices, or lead elsewhere through symlinks.
    fc.constantFrom(...world.oddDevices).map((device) => (b: Record<string, unknown>) => (kind === 'resize' ? b : setPath(b, ['device'], device))),
    // A key that does not exist, or another project's view of the one that does.
    fc.oneof(fc.uuid().map((id) => ['key', 'id', id]), fc.constantFrom(['project_id', 'p2'], ['project_id', 'P1'])).map((change) => (b: Record<string, unknown>) => {
      const value = change[change.length - 1];
      return setPath(b, change.slice(0, -1), value);
    }),
  );
}

/**
 * A valid body with one to four mutations, kept only when the result is no
 * valid request: the schema refuses it, or it names a key or project that
 * does not exist. Never provider "nop": over a real loop device that is a
 * valid attach that needs no key.
 */
export function mutatedBody(kind: BodyKind, schema: ZodType, world: FuzzWorld): fc.Arbitrary<unknown> {
  return fc
    .array(mutation(kind, world), { minLength: 1, maxLength: 4 })
    .map((changes) => changes.reduce((b, change) => change(b), validBody(kind, world)))
    .filter((body) => {
      const parsed = schema.safeParse(body);
      if (!parsed.success) return true;
      const value = parsed.data as { provider?: string; key?: { id?: string }; project_id?: string; device?: string };
      if (typeof value.provider === 'string' && isNop(value.provider)) return false;
      // Valid in form: refused only for a key or project that is not there, or a device that is no block device.
      const keyGone = value.key?.id !== undefined && value.key.id !== world.keyId;
      const otherProject = value.project_id !== 'p1';
      const oddDevice = value.device !== undefined && world.oddDevices.includes(value.device);
      return kind !== 'erase' && (keyGone || otherProject || oddDevice);
    });
}

/** Random JSON (or not JSON, or not UTF-8), deep nesting and oversized bodies, for a route that takes a body. */
export function randomBody(schema: ZodType, maxBody: number): fc.Arbitrary<RawBytes> {
  const json = fc.jsonValue({ maxDepth: 5 }).filter((v) => !schema.safeParse(v).success).map((v) => Buffer.from(JSON.stringify(v) ?? 'null'));
  const nested = fc.tuple(fc.integer({ min: 1, max: Math.floor(maxBody / 2) }), fc.constantFrom('[', '{"a":')).map(([depth, open]) => Buffer.from(open.repeat(depth) + (open === '[' ? '1' + ']'.repeat(depth) : '1' + '}'.repeat(depth))));
  const bytes = fc.uint8Array({ minLength: 1, maxLength: 512 }).map((a) => Buffer.from(a));
  // Valid JSON text around bytes that are not UTF-8: a lenient decoder would turn them into U+FFFD.
  const badUtf8 = fc.constantFrom(Buffer.from([0xff]), Buffer.from([0xc3]), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from([0xf8, 0x88, 0x80, 0x80, 0x80]), Buffer.from([0xc0, 0xaf]));
  const notUtf8 = fc.tuple(badUtf8, fc.constantFrom('project_id', 'device', 'provider')).map(([bad, field]) => Buffer.concat([Buffer.from(`{"${field}":"p`), bad, Buffer.from('1"}')]));
  const huge = fc.integer({ min: maxBody + 1, max: maxBody * 4 }).map((n) => Buffer.from(`{"project_id":"${'p'.repeat(n)}"}`));
  return fc.oneof({ arbitrary: json, weight: 4 }, { arbitrary: nested, weight: 1 }, { arbitrary: bytes, weight: 2 }, { arbitrary: notUtf8, weight: 1 }, { arbitrary: huge, weight: 1 }).map(shown);
}

const CACHE_KEY = /^[A-Za-z0-9_.:-]{1,512}$/;

/** A name no route takes: traversal, separators, NUL, 300 bytes, symbols first, unicode. */
const oddName = fc.oneof(
  fc.constantFrom('..', '.', '../etc', 'a/../b', '/', '%2F', 'a%2Fb', '%00', '\0', '-rf', '.hidden', '_x', '+x', 'a b', 'a?b=1', 'a#b', 'ü', 'a'.repeat(128), 'a'.repeat(300), 'x'.repeat(64), '%2e%2e', ''),
  fc.string({ unit: 'binary', maxLength: 300 }),
  fc.string({ unit: 'grapheme', maxLength: 40 }),
);

/** A request line for a path-parameter route, with a name (or two) the route cannot take. */
export function oddPathRequest(): fc.Arbitrary<{ method: string; path: string }> {
  const method = fc.constantFrom('GET', 'PUT', 'POST', 'DELETE', 'PATCH', 'OPTIONS', 'FUZZ');
  const encoded = fc.tuple(oddName, fc.boolean()).map(([name, encode]) => (encode ? encodeURIComponent(name) : name));
  // What the server will take as the name: up to a query or the end of the request target.
  const asRouted = (n: string) => n.split(/[?\s]/)[0] ?? '';
  const volume = encoded.filter((n) => !NAME_PATTERN.test(asRouted(n))).chain((n) => fc.constantFrom(`/v1/volumes/${n}`, `/v1/volumes/${n}/resize`, `/v1/volumes/ok/${n}`));
  const ephemeral = fc.tuple(encoded, fc.constantFrom('inst', 'disk')).filter(([n]) => !ID_PATTERN.test(asRouted(n))).chain(([n, other]) => fc.constantFrom(`/v1/ephemeral/${n}/${other}`, `/v1/ephemeral/${other}/${n}`, `/v1/ephemeral/${n}`));
  const cache = encoded.filter((n) => !CACHE_KEY.test(asRouted(n))).map((n) => `/v1/cache/${n}`);
  const anywhere = encoded.filter((n) => asRouted(n) !== 'metrics').map((n) => `/${n}`);
  return fc.record({ method, path: fc.oneof(volume, ephemeral, cache, anywhere) });
}
