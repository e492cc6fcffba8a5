/**
 * The helper protocol's frames (docs/helper-protocol.md, version 1): a
 * little-endian u32 length, then version, kind, op, id, [status,] and
 * tag-length-value fields. Written once, here, for the client; the helper
 * has its own decoder in C and trusts nothing this side sends.
 */

export const PROTOCOL_VERSION = 1;
export const MAX_BODY = 17 * 1024 * 1024;
const REQUEST = 1;
const RESPONSE = 2;

export const Op = {
  HELLO: 1,
  HEADER: 2,
  OPEN: 3,
  CLOSE: 4,
  RESIZE: 5,
  FORMAT: 6,
  KEY_TEST: 7,
  KEY_ADD: 8,
  KEY_CHANGE: 9,
  KEY_REMOVE: 10,
  ERASE: 11,
  TOKEN_SET: 12,
  STATUS: 13,
  LIST: 14,
  TARGETS: 15,
  REMOVE_EMPTY: 16,
  READ: 17,
  SCAN_ZEROS: 18,
  SYMLINK: 19,
  PROBE: 20,
} as const;
export type OpName = keyof typeof Op;
export const opName = (op: number): string => (Object.keys(Op) as OpName[]).find((k) => Op[k] === op) ?? `op ${op}`;

export const Tag = {
  PATH: 1,
  NAME: 2,
  RDEV: 3,
  KEY: 4,
  NEW_KEY: 5,
  TYPE: 6,
  CIPHER: 7,
  KEY_BITS: 8,
  OFFSET: 9,
  LENGTH: 10,
  FLAGS: 11,
  PBKDF: 12,
  ITERATIONS: 13,
  MEMORY_KIB: 14,
  LABEL: 15,
  TOKEN_JSON: 16,
  SLOT: 17,
  LINK: 18,
  MESSAGE: 100,
  ERRNO: 101,
  DATA: 102,
  JSON: 103,
} as const;

export const Flag = { READ_ONLY: 1, ALLOW_DISCARDS: 2, DEFERRED: 4, NO_READ_WORKQUEUE: 8, NO_WRITE_WORKQUEUE: 16 } as const;

/** A field's value: text, bytes (a key: the caller's buffer, never copied here beyond the frame), or a number by its wire width. */
export type FieldValue = string | Uint8Array | { u32: number } | { u64: number } | { i32: number };
export type Fields = ReadonlyArray<readonly [number, FieldValue]>;

function fieldBytes(value: FieldValue): Uint8Array {
  if (typeof value === 'string') return Buffer.from(value, 'utf8');
  if (value instanceof Uint8Array) return value;
  const out = Buffer.alloc('u64' in value ? 8 : 4);
  if ('u32' in value) out.writeUInt32LE(value.u32);
  else if ('i32' in value) out.writeInt32LE(value.i32);
  else out.writeBigUInt64LE(BigInt(value.u64));
  return out;
}

/**
 * One request frame in `into` (a buffer from `alloc`, so that a frame that
 * carries a key lives in locked memory and is wiped by its owner).
 */
export function requestSize(fields: Fields): number {
  let size = 4 + 8;
  for (const [, value] of fields) size += 6 + fieldBytes(value).length;
  return size;
}

export function encodeRequest(into: Buffer, op: number, id: number, fields: Fields): Buffer {
  const total = requestSize(fields);
  if (into.length < total) throw new RangeError(`frame needs ${total} bytes, got ${into.length}`);
  into.writeUInt32LE(total - 4, 0);
  into.writeUInt8(PROTOCOL_VERSION, 4);
  into.writeUInt8(REQUEST, 5);
  into.writeUInt16LE(op, 6);
  into.writeUInt32LE(id, 8);
  let at = 4 + 8;
  for (const [tag, value] of fields) {
    const bytes = fieldBytes(value);
    into.writeUInt16LE(tag, at);
    into.writeUInt32LE(bytes.length, at + 2);
    into.set(bytes, at + 6);
    at += 6 + bytes.length;
  }
  return into.subarray(0, total);
}

export interface Response {
  op: number;
  id: number;
  status: number;
  fields: Map<number, Buffer>;
}

export class FrameError extends Error {}

/** A response body (the bytes after the length). @throws FrameError for anything malformed */
export function decodeResponse(body: Buffer): Response {
  if (body.length < 12) throw new FrameError(`a response of ${body.length} bytes is shorter than its header`);
  if (body.readUInt8(0) !== PROTOCOL_VERSION) throw new FrameError(`protocol version ${body.readUInt8(0)}, expected ${PROTOCOL_VERSION}`);
  if (body.readUInt8(1) !== RESPONSE) throw new FrameError(`frame kind ${body.readUInt8(1)} is not a response`);
  const fields = new Map<number, Buffer>();
  let at = 12;
  while (at < body.length) {
    if (at + 6 > body.length) throw new FrameError('a field header runs past the frame');
    const tag = body.readUInt16LE(at);
    const length = body.readUInt32LE(at + 2);
    if (at + 6 + length > body.length) throw new FrameError(`field ${tag} runs past the frame`);
    if (fields.has(tag)) throw new FrameError(`field ${tag} repeated`);
    fields.set(tag, body.subarray(at + 6, at + 6 + length));
    at += 6 + length;
  }
  return { op: body.readUInt16LE(2), id: body.readUInt32LE(4), status: body.readInt32LE(8), fields };
}

/** Splits a byte stream into frame bodies. */
export class FrameReader {
  private pending: Buffer[] = [];
  private size = 0;

  push(chunk: Buffer): Buffer[] {
    this.pending.push(chunk);
    this.size += chunk.length;
    const out: Buffer[] = [];
    let buf = this.pending.length === 1 ? chunk : Buffer.concat(this.pending, this.size);
    while (buf.length >= 4) {
      const length = buf.readUInt32LE(0);
      if (length < 8 || length > MAX_BODY) throw new FrameError(`frame length ${length} is out of range`);
      if (buf.length < 4 + length) break;
      out.push(buf.subarray(4, 4 + length));
      buf = buf.subarray(4 + length);
    }
    this.pending = buf.length === 0 ? [] : [buf];
    this.size = buf.length;
    return out;
  }
}

export const text = (r: Response, tag: number): string | undefined => r.fields.get(tag)?.toString('utf8');
export const i32 = (r: Response, tag: number): number | undefined => {
  const b = r.fields.get(tag);
  return b !== undefined && b.length === 4 ? b.readInt32LE(0) : undefined;
};
