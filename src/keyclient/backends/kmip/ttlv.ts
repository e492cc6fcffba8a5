import { keyError, type KeyClientError } from '../../errors.js';
import { tagName } from './tags.js';

/**
 * KMIP's TTLV encoding (KMIP 1.x specification §9.1, 2.0 §9.1): every item is
 * a 3-byte tag, a 1-byte type, a 4-byte length and a value padded to a
 * multiple of 8 bytes. The decoder is strict (known types, exact lengths,
 * zero padding, structures filled exactly, UTF-8 text) and bounded (depth,
 * item count, and the caller's size limit), because its input is whatever
 * arrives from the network: anything it cannot vouch for is E_KMIP_DECODE,
 * never another exception.
 */

export const ItemType = {
  structure: 0x01,
  integer: 0x02,
  longInteger: 0x03,
  bigInteger: 0x04,
  enumeration: 0x05,
  boolean: 0x06,
  textString: 0x07,
  byteString: 0x08,
  dateTime: 0x09,
  interval: 0x0a,
} as const;
export type ItemTypeName = keyof typeof ItemType;

export type TtlvItem =
  | { tag: number; type: 'structure'; value: TtlvItem[] }
  | { tag: number; type: 'integer'; value: number }
  | { tag: number; type: 'longInteger'; value: bigint }
  | { tag: number; type: 'bigInteger'; value: bigint }
  | { tag: number; type: 'enumeration'; value: number }
  | { tag: number; type: 'boolean'; value: boolean }
  | { tag: number; type: 'textString'; value: string }
  /** Decoded byte strings are views into the decoder's input: copy what outlives it. */
  | { tag: number; type: 'byteString'; value: Buffer }
  /** Seconds since the epoch (signed 64-bit on the wire). */
  | { tag: number; type: 'dateTime'; value: bigint }
  /** Seconds (unsigned 32-bit). */
  | { tag: number; type: 'interval'; value: number };

const typeNames = new Map<number, ItemTypeName>(Object.entries(ItemType).map(([name, code]) => [code, name as ItemTypeName]));

/** Nesting deeper than any KMIP message we speak; a bound so hostile input cannot recurse without end. */
export const MAX_DEPTH = 16;
const HEADER = 8;

// Arithmetic, not `(n + 7) & ~7`: bit operators work on 32-bit signed ints, and a hostile length of 0xFFFFFFF8 would wrap negative.
const pad8 = (n: number) => Math.ceil(n / 8) * 8;

function valueLength(item: TtlvItem): number {
  switch (item.type) {
    case 'structure':
      return item.value.reduce((sum, child) => sum + HEADER + pad8(valueLength(child)), 0);
    case 'integer':
    case 'enumeration':
    case 'interval':
      return 4;
    case 'longInteger':
    case 'boolean':
    case 'dateTime':
      return 8;
    case 'bigInteger':
      return bigIntegerBytes(item.value);
    case 'textString':
      return Buffer.byteLength(item.value, 'utf8');
    case 'byteString':
      return item.value.length;
  }
}

/** Bytes of a two's-complement big integer, a multiple of 8 (the spec pads big integers by sign extension). */
function bigIntegerBytes(value: bigint): number {
  let bytes = 8;
  while (value >= 1n << BigInt(bytes * 8 - 1) || value < -(1n << BigInt(bytes * 8 - 1))) bytes += 8;
  return bytes;
}

/**
 * Encodes one item (a whole message is one structure).
 * @throws E_INVALID_ARGUMENT for a value its type cannot carry (a bug in the caller, never sent).
 */
export function encodeTtlv(item: TtlvItem): Buffer {
  const out = Buffer.alloc(HEADER + pad8(valueLength(item)));
  write(out, 0, item);
  return out;
}

function write(out: Buffer, at: number, item: TtlvItem): number {
  if (!Number.isInteger(item.tag) || item.tag < 0 || item.tag > 0xffffff) throw invalid(`tag ${item.tag} is not a 3-byte tag`);
  const length = valueLength(item);
  out.writeUIntBE(item.tag, at, 3);
  out.writeUInt8(ItemType[item.type], at + 3);
  out.writeUInt32BE(length, at + 4);
  const v = at + HEADER;
  switch (item.type) {
    case 'structure': {
      let child = v;
      for (const sub of item.value) child = write(out, child, sub);
      break;
    }
    case 'integer':
      checkRange(item, -0x80000000, 0x7fffffff);
      out.writeInt32BE(item.value, v);
      break;
    case 'enumeration':
    case 'interval':
      checkRange(item, 0, 0xffffffff);
      out.writeUInt32BE(item.value, v);
      break;
    case 'longInteger':
    case 'dateTime':
      if (item.value < -(1n << 63n) || item.value >= 1n << 63n) throw invalid(`${describe(item)} ${item.value} does not fit 64 bits`);
      out.writeBigInt64BE(item.value, v);
      break;
    case 'boolean':
      out.writeBigUInt64BE(item.value ? 1n : 0n, v);
      break;
    case 'bigInteger': {
      let rest = item.value;
      for (let i = length - 1; i >= 0; i -= 1) {
        out[v + i] = Number(BigInt.asUintN(8, rest));
        rest >>= 8n;
      }
      break;
    }
    case 'textString':
      out.write(item.value, v, 'utf8');
      break;
    case 'byteString':
      item.value.copy(out, v);
      break;
  }
  return v + pad8(length);
}

function checkRange(item: TtlvItem & { value: number }, min: number, max: number): void {
  if (!Number.isInteger(item.value) || item.value < min || item.value > max) throw invalid(`${describe(item)} ${item.value} is out of range`);
}

function invalid(message: string): KeyClientError {
  return keyError('E_INVALID_ARGUMENT', `Cannot encode a KMIP item: ${message}`);
}

export interface DecodeLimits {
  /** Largest input accepted, in bytes (the response size limit). */
  maxBytes: number;
  /** @default MAX_DEPTH */
  maxDepth?: number;
}

/**
 * Decodes exactly one item filling all of `input`.
 * @throws E_KMIP_DECODE for anything that is not strictly valid TTLV.
 */
export function decodeTtlv(input: Buffer, limits: DecodeLimits): TtlvItem {
  if (input.length > limits.maxBytes) throw decodeError(`message is ${input.length} bytes, over the ${limits.maxBytes}-byte limit`, 0);
  const { item, next } = read(input, 0, input.length, 0, limits.maxDepth ?? MAX_DEPTH);
  if (next !== input.length) throw decodeError(`${input.length - next} bytes follow the message`, next);
  return item;
}

/** The value length a TTLV header at the start of `header` (8 bytes) announces; for framing a stream. */
export function announcedLength(header: Buffer): number {
  if (header.length < HEADER) throw decodeError('a TTLV header is 8 bytes', 0);
  return header.readUInt32BE(4);
}

function read(input: Buffer, at: number, end: number, depth: number, maxDepth: number): { item: TtlvItem; next: number } {
  if (end - at < HEADER) throw decodeError(`${end - at} bytes cannot hold an item header`, at);
  const tag = input.readUIntBE(at, 3);
  const high = tag >> 16;
  // §9.1.1.1: tags start 0x42 (specification) or 0x54 (extensions); anything else is not TTLV.
  if (high !== 0x42 && high !== 0x54) throw decodeError(`tag 0x${tag.toString(16)} starts neither 0x42 nor 0x54`, at);
  const type = typeNames.get(input.readUInt8(at + 3));
  if (type === undefined) throw decodeError(`${tagName(tag)} has unknown item type 0x${input.readUInt8(at + 3).toString(16)}`, at);
  const length = input.readUInt32BE(at + 4);
  const v = at + HEADER;
  const padded = pad8(length);
  if (padded > end - v) throw decodeError(`${tagName(tag)} (${type}) announces ${length} bytes but ${end - v} remain`, at);
  const fixed = fixedLengths[type];
  if (fixed !== undefined && length !== fixed) throw decodeError(`${tagName(tag)} (${type}) has length ${length}, not ${fixed}`, at);
  for (let i = v + length; i < v + padded; i += 1) {
    if (input[i] !== 0) throw decodeError(`${tagName(tag)} (${type}) has non-zero padding`, i);
  }
  const next = v + padded;
  switch (type) {
    case 'structure': {
      if (depth + 1 > maxDepth) throw decodeError(`${tagName(tag)} nests deeper than ${maxDepth} structures`, at);
      const value: TtlvItem[] = [];
      let child = v;
      while (child < v + length) {
        const r = read(input, child, v + length, depth + 1, maxDepth);
        value.push(r.item);
        child = r.next;
      }
      return { item: { tag, type, value }, next };
    }
    case 'integer':
      return { item: { tag, type, value: input.readInt32BE(v) }, next };
    case 'enumeration':
    case 'interval':
      return { item: { tag, type, value: input.readUInt32BE(v) }, next };
    case 'longInteger':
    case 'dateTime':
      return { item: { tag, type, value: input.readBigInt64BE(v) }, next };
    case 'boolean': {
      const raw = input.readBigUInt64BE(v);
      if (raw > 1n) throw decodeError(`${tagName(tag)} (boolean) is ${raw}, neither 0 nor 1`, at);
      return { item: { tag, type, value: raw === 1n }, next };
    }
    case 'bigInteger': {
      if (length === 0 || length % 8 !== 0) throw decodeError(`${tagName(tag)} (big integer) has length ${length}, not a positive multiple of 8`, at);
      let value = 0n;
      for (let i = 0; i < length; i += 1) value = (value << 8n) | BigInt(input[v + i] as number);
      return { item: { tag, type, value: BigInt.asIntN(length * 8, value) }, next };
    }
    case 'textString':
      try {
        return { item: { tag, type, value: utf8.decode(input.subarray(v, v + length)) }, next };
      } catch {
        throw decodeError(`${tagName(tag)} (text string) is not valid UTF-8`, at);
      }
    case 'byteString':
      return { item: { tag, type, value: input.subarray(v, v + length) }, next };
  }
}

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

const fixedLengths: Partial<Record<ItemTypeName, number>> = {
  integer: 4,
  enumeration: 4,
  interval: 4,
  longInteger: 8,
  boolean: 8,
  dateTime: 8,
};

function describe(item: TtlvItem): string {
  return `${tagName(item.tag)} (${item.type})`;
}

function decodeError(message: string, offset: number): KeyClientError {
  return keyError('E_KMIP_DECODE', `Invalid KMIP message at byte ${offset}: ${message}`, { details: { offset } });
}
