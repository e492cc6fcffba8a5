import { keyError } from '../../errors.js';
import type { ObjectType } from '../../objects/index.js';
import type { SecretBuffer, SecureAllocator } from '../../../util/secure-memory.js';

/**
 * Byte-level codecs for Barbican payloads that never turn key material into
 * JavaScript strings (strings cannot be wiped): base64 straight into Buffers,
 * and PEM <-> DER for the key types.
 *
 * Why PEM at all: Castellan stores private keys, public keys and
 * certificates in Barbican as PEM and converts to DER on the way out, and
 * Barbican's own RSA orders produce PEM. Portcullis objects hold DER (like
 * Castellan's), so we convert the same way, and secrets written by either
 * side read back identically through the other.
 */

const alphabet = Buffer.from('ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/', 'ascii');
const decodeTable = new Int16Array(256).fill(-1);
alphabet.forEach((char, index) => (decodeTable[char] = index));
const pad = 0x3d; // '='

/** Base64 of `src` as ASCII bytes in a new Buffer that the caller wipes. */
export function base64Encode(src: Uint8Array): Buffer {
  const out = Buffer.alloc(Math.ceil(src.length / 3) * 4);
  let o = 0;
  for (let i = 0; i < src.length; i += 3) {
    const a = src[i] as number;
    const b = i + 1 < src.length ? (src[i + 1] as number) : 0;
    const c = i + 2 < src.length ? (src[i + 2] as number) : 0;
    out[o++] = alphabet[a >> 2] as number;
    out[o++] = alphabet[((a & 3) << 4) | (b >> 4)] as number;
    out[o++] = i + 1 < src.length ? (alphabet[((b & 15) << 2) | (c >> 6)] as number) : pad;
    out[o++] = i + 2 < src.length ? (alphabet[c & 63] as number) : pad;
  }
  return out;
}

/** Decodes base64 text (whitespace ignored) into secure memory. Undefined when it is not base64. */
function base64DecodeSecret(text: Uint8Array, allocator: SecureAllocator): SecretBuffer | undefined {
  let digits = 0;
  let padding = 0;
  for (const char of text) {
    if (char === pad) padding += 1;
    else if (decodeTable[char] !== -1 && padding === 0) digits += 1;
    else if (char !== 0x0a && char !== 0x0d && char !== 0x20 && char !== 0x09) return undefined;
  }
  if ((digits + padding) % 4 !== 0 || padding > 2) return undefined;
  const out = allocator.alloc(Math.floor((digits * 6) / 8));
  const view = out.view();
  let acc = 0;
  let bits = 0;
  let o = 0;
  for (const char of text) {
    const value = decodeTable[char] as number;
    if (value === -1) continue;
    acc = ((acc << 6) | value) & 0xffffff;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      view[o++] = (acc >> bits) & 0xff;
    }
  }
  acc = 0;
  return out;
}

const pemLabels: Partial<Record<ObjectType, string>> = { private: 'PRIVATE KEY', public: 'PUBLIC KEY', certificate: 'CERTIFICATE' };

/** Whether Barbican holds this type as PEM (Castellan's convention). */
export function storedAsPem(type: ObjectType): boolean {
  return pemLabels[type] !== undefined;
}

/** DER → PEM text bytes, in a new Buffer the caller wipes. */
export function derToPem(type: ObjectType, der: Uint8Array): Buffer {
  const label = pemLabels[type];
  if (label === undefined) throw keyError('E_INVALID_ARGUMENT', `${type} objects are not PEM-encoded`);
  if (der[0] !== 0x30) throw keyError('E_INVALID_ARGUMENT', `A ${type} object must hold DER bytes (an ASN.1 SEQUENCE); refusing to store it`);
  const b64 = base64Encode(der);
  const head = Buffer.from(`-----BEGIN ${label}-----\n`, 'ascii');
  const tail = Buffer.from(`-----END ${label}-----\n`, 'ascii');
  const lines = Math.ceil(b64.length / 64);
  const out = Buffer.alloc(head.length + b64.length + lines + tail.length);
  let o = head.copy(out, 0);
  for (let i = 0; i < b64.length; i += 64) {
    o += b64.copy(out, o, i, Math.min(i + 64, b64.length));
    out[o++] = 0x0a;
  }
  tail.copy(out, o);
  b64.fill(0);
  return out;
}

/**
 * PEM payload → DER in secure memory; wipes `pem`. A payload that is not PEM
 * is returned as is (someone stored DER directly). PKCS#1 RSA keys are
 * wrapped into PKCS#8/SPKI, as Castellan's conversion does.
 * @throws E_BACKEND_PROTOCOL for a PEM block that cannot be decoded or an unexpected label.
 */
export function pemToDer(type: ObjectType, pem: SecretBuffer, allocator: SecureAllocator): SecretBuffer {
  const bytes = pem.view();
  const start = bytes.indexOf('-----BEGIN ');
  if (start === -1 || bytes.subarray(0, start).some((c) => c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09)) return pem;
  const labelEnd = bytes.indexOf('-----', start + 11);
  const bodyStart = labelEnd === -1 ? -1 : labelEnd + 5;
  const label = labelEnd === -1 ? '' : bytes.subarray(start + 11, labelEnd).toString('ascii');
  const end = bodyStart === -1 ? -1 : bytes.indexOf(`-----END ${label}-----`, bodyStart);
  const der = end === -1 ? undefined : base64DecodeSecret(bytes.subarray(bodyStart, end), allocator);
  pem.wipe();
  if (der === undefined) throw keyError('E_BACKEND_PROTOCOL', `Barbican returned a ${type} payload whose PEM block cannot be decoded`);
  const accepted: Record<string, ObjectType> = { 'PRIVATE KEY': 'private', 'PUBLIC KEY': 'public', CERTIFICATE: 'certificate', 'RSA PRIVATE KEY': 'private', 'RSA PUBLIC KEY': 'public' };
  if (accepted[label] !== type) {
    der.wipe();
    throw keyError('E_BACKEND_PROTOCOL', `Barbican returned a ${type} payload holding a PEM "${label}" block; expected ${pemLabels[type] ?? 'none'}`);
  }
  if (label === 'RSA PRIVATE KEY') return wrap(der, allocator, pkcs8RsaPrefix);
  if (label === 'RSA PUBLIC KEY') return wrap(der, allocator, spkiRsaPrefix);
  return der;
}

// AlgorithmIdentifier { rsaEncryption, NULL }
const rsaAlgorithm = [0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00];

/** PrivateKeyInfo ::= SEQUENCE { version 0, algorithm, OCTET STRING pkcs1 } */
function pkcs8RsaPrefix(innerLength: number): number[] {
  const octets = [0x04, ...derLength(innerLength)];
  const bodyLength = 3 + rsaAlgorithm.length + octets.length + innerLength;
  return [0x30, ...derLength(bodyLength), 0x02, 0x01, 0x00, ...rsaAlgorithm, ...octets];
}

/** SubjectPublicKeyInfo ::= SEQUENCE { algorithm, BIT STRING (0 unused bits) pkcs1 } */
function spkiRsaPrefix(innerLength: number): number[] {
  const bits = [0x03, ...derLength(innerLength + 1), 0x00];
  const bodyLength = rsaAlgorithm.length + bits.length + innerLength;
  return [0x30, ...derLength(bodyLength), ...rsaAlgorithm, ...bits];
}

function derLength(length: number): number[] {
  if (length < 0x80) return [length];
  const bytes: number[] = [];
  for (let rest = length; rest > 0; rest = Math.floor(rest / 256)) bytes.unshift(rest & 0xff);
  return [0x80 | bytes.length, ...bytes];
}

function wrap(inner: SecretBuffer, allocator: SecureAllocator, prefixOf: (length: number) => number[]): SecretBuffer {
  const prefix = prefixOf(inner.length);
  const out = allocator.alloc(prefix.length + inner.length);
  out.view().set(prefix, 0);
  out.view().set(inner.view(), prefix.length);
  inner.wipe();
  return out;
}
