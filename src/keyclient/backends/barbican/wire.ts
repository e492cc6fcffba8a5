import { keyError } from '../../errors.js';
import { objectOfType, objectTypes, type ManagedObject, type ObjectMetadata, type ObjectType } from '../../objects/index.js';
import type { SecretBuffer } from '../../../util/secure-memory.js';
import { base64Encode, derToPem, storedAsPem } from './pem.js';

/**
 * What goes over the wire to Barbican v1 and back: ids, secret metadata,
 * request bodies. No I/O here.
 */

const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const hrefPattern = /\/(secrets|orders|containers)\/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\/?$/i;

/**
 * The secret UUID of a bare UUID or a secret href. Only the UUID is used:
 * requests always go to the configured endpoint, never to a host named in an
 * id, so an id cannot send our token elsewhere.
 * @throws E_INVALID_ARGUMENT
 */
export function secretUuid(id: string): string {
  if (uuidPattern.test(id)) return id.toLowerCase();
  const match = hrefPattern.exec(id);
  if (match !== null && match[1] === 'secrets') return (match[2] as string).toLowerCase();
  throw keyError('E_INVALID_ARGUMENT', `"${id.slice(0, 200)}" is not a Barbican secret id (a UUID or an href ending in /secrets/UUID); nothing was sent`, {
    details: { id: id.slice(0, 200) },
  });
}

/** The UUID at the end of an href Barbican returned. @throws E_BACKEND_PROTOCOL */
export function uuidOfRef(ref: unknown, kind: 'secrets' | 'orders' | 'containers'): string {
  const match = typeof ref === 'string' ? hrefPattern.exec(ref) : null;
  if (match === null || match[1] !== kind) {
    throw keyError('E_BACKEND_PROTOCOL', `Barbican returned ${JSON.stringify(ref)?.slice(0, 200)} where a ${kind} href was expected`);
  }
  return (match[2] as string).toLowerCase();
}

/** Barbican's secret_type → our object type; types we do not know are opaque bytes, as in Castellan. */
export function objectTypeOf(secretType: unknown): ObjectType {
  return objectTypes.find((t) => t === secretType) ?? 'opaque';
}

export interface SecretMetadata {
  type: ObjectType;
  meta: ObjectMetadata;
}

/** Parses a secret's metadata (GET /v1/secrets/{id}, or an entry of a list). @throws E_BACKEND_PROTOCOL */
export function parseSecretMetadata(json: unknown): SecretMetadata {
  if (typeof json !== 'object' || json === null) throw keyError('E_BACKEND_PROTOCOL', 'Barbican returned secret metadata that is not a JSON object');
  const s = json as Record<string, unknown>;
  const meta: ObjectMetadata = { id: uuidOfRef(s['secret_ref'], 'secrets') };
  if (typeof s['name'] === 'string') meta.name = s['name'];
  if (typeof s['algorithm'] === 'string') meta.algorithm = s['algorithm'];
  if (typeof s['bit_length'] === 'number') meta.bitLength = s['bit_length'];
  if (typeof s['created'] === 'string') {
    // Barbican writes UTC without a zone designator ("2026-11-22T22:51:47.928629").
    const text = /(Z|[+-]\d\d:?\d\d)$/.test(s['created']) ? s['created'] : `${s['created']}Z`;
    const created = new Date(text);
    if (!Number.isNaN(created.getTime())) meta.created = created;
  }
  return { type: objectTypeOf(s['secret_type']), meta };
}

export function objectFromMetadata(parsed: SecretMetadata, secret: SecretBuffer | undefined): ManagedObject {
  return objectOfType(parsed.type, parsed.meta, secret);
}

/** AES lengths Barbican's simple_crypto generates; 512 is AES-256-XTS, ordered with mode "xts". */
const aesLengths = [128, 192, 256, 512];
/** RSA lengths Barbican generates (PluginSupportTypes.ASYMMETRIC_KEY_LENGTHS). */
const rsaLengths = [1024, 2048, 4096];
const maxNameLength = 255;

export function checkName(name: string | undefined): void {
  if (name !== undefined && (name.length === 0 || name.length > maxNameLength)) {
    throw keyError('E_INVALID_ARGUMENT', `Object names must be 1 to ${maxNameLength} characters (got ${name.length}); nothing was sent`);
  }
}

/**
 * The body of a key order. Mode "cbc" as Castellan orders; 512-bit keys as
 * "xts", the only mode in which Barbican accepts 512 bits (two AES-256 keys).
 * @throws E_INVALID_ARGUMENT
 */
export function keyOrder(algorithm: string, length: number, name: string | undefined): unknown {
  const alg = algorithm.toLowerCase();
  if (alg !== 'aes' || !aesLengths.includes(length)) {
    throw keyError('E_INVALID_ARGUMENT', `Barbican makes AES keys of ${aesLengths.join(', ')} bits; cannot create ${algorithm} ${length}; nothing was sent`, {
      details: { algorithm, length },
    });
  }
  checkName(name);
  const meta = { algorithm: alg, bit_length: length, mode: length === 512 ? 'xts' : 'cbc', payload_content_type: 'application/octet-stream' };
  return { type: 'key', meta: name === undefined ? meta : { name, ...meta } };
}

/** @throws E_INVALID_ARGUMENT */
export function keyPairOrder(algorithm: string, length: number, name: string | undefined): unknown {
  const alg = algorithm.toLowerCase();
  if (alg !== 'rsa' || !rsaLengths.includes(length)) {
    throw keyError('E_INVALID_ARGUMENT', `Barbican makes RSA key pairs of ${rsaLengths.join(', ')} bits; cannot create ${algorithm} ${length}; nothing was sent`, {
      details: { algorithm, length },
    });
  }
  checkName(name);
  const meta = { algorithm: alg, bit_length: length, payload_content_type: 'application/octet-stream' };
  return { type: 'asymmetric', meta: name === undefined ? meta : { name, ...meta } };
}

/**
 * The JSON body of POST /v1/secrets for `obj`, built as bytes so the
 * base64 payload never exists as a string. The caller wipes the result.
 * @throws E_INVALID_ARGUMENT, E_METADATA_ONLY, E_OBJECT_WIPED
 */
export function storeBody(obj: ManagedObject): Buffer {
  checkName(obj.name);
  const bytes = obj.bytes();
  if (bytes.length === 0) throw keyError('E_INVALID_ARGUMENT', `Cannot store an empty ${obj.type} object: Barbican refuses empty payloads; nothing was sent`);
  const fields: Record<string, unknown> = {
    secret_type: obj.type,
    payload_content_type: 'application/octet-stream',
    payload_content_encoding: 'base64',
  };
  if (obj.name !== undefined) fields['name'] = obj.name;
  if (obj.algorithm !== undefined) fields['algorithm'] = obj.algorithm;
  if (obj.bitLength !== undefined) fields['bit_length'] = obj.bitLength;
  const pem = storedAsPem(obj.type) ? derToPem(obj.type, bytes) : undefined;
  const b64 = base64Encode(pem ?? bytes);
  pem?.fill(0);
  const head = Buffer.from('{"payload":"', 'ascii');
  const tail = Buffer.from(`",${JSON.stringify(fields).slice(1)}`, 'utf8');
  const body = Buffer.alloc(head.length + b64.length + tail.length);
  head.copy(body, 0);
  b64.copy(body, head.length);
  tail.copy(body, head.length + b64.length);
  b64.fill(0);
  return body;
}
