/**
 * The helper protocol's frames (docs/helper-protocol.md), for the helper's
 * tests only: the daemon's client is written in src/ against the same page.
 * Deliberately small and literal, so that a test states bytes it means.
 */
export const Op = {
  HELLO: 1, HEADER: 2, OPEN: 3, CLOSE: 4, RESIZE: 5, FORMAT: 6, KEY_TEST: 7, KEY_ADD: 8, KEY_CHANGE: 9,
  KEY_REMOVE: 10, ERASE: 11, TOKEN_SET: 12, STATUS: 13, LIST: 14, TARGETS: 15, REMOVE_EMPTY: 16, READ: 17,
  SCAN_ZEROS: 18, SYMLINK: 19, PROBE: 20,
} as const;

export const Tag = {
  PATH: 1, NAME: 2, RDEV: 3, KEY: 4, NEW_KEY: 5, TYPE: 6, CIPHER: 7, KEY_BITS: 8, OFFSET: 9, LENGTH: 10,
  FLAGS: 11, PBKDF: 12, ITERATIONS: 13, MEMORY_KIB: 14, LABEL: 15, TOKEN_JSON: 16, SLOT: 17, LINK: 18,
  MESSAGE: 100, ERRNO: 101, DATA: 102, JSON: 103,
} as const;

export const Status = {
  OK: 0, EINVAL: 1, NOT_FOUND: 2, DEVICE_CHANGED: 3, WRONG_KEY: 4, BUSY: 5, NOT_LUKS: 6, IO: 7, NOMEM: 8,
  DM_UNAVAILABLE: 9, SUSPENDED: 10, FAILED: 11, TOO_MANY: 12,
} as const;

/** A field value: a string (UTF-8), raw bytes, or a number typed as the protocol wants it. */
export type Value = string | Buffer | { u32: number } | { i32: number } | { u64: bigint };
export type Fields = ReadonlyArray<readonly [number, Value]>;

export function encodeValue(v: Value): Buffer {
  if (typeof v === 'string') return Buffer.from(v, 'utf8');
  if (Buffer.isBuffer(v)) return v;
  const b = Buffer.alloc('u64' in v ? 8 : 4);
  if ('u32' in v) b.writeUInt32LE(v.u32);
  else if ('i32' in v) b.writeInt32LE(v.i32);
  else b.writeBigUInt64LE(v.u64);
  return b;
}

/** A request body (no length prefix) with the given header bytes, for malformed-frame tests. */
export function requestBody(op: number, id: number, fields: Fields = [], version = 1, kind = 1): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt8(version, 0);
  head.writeUInt8(kind, 1);
  head.writeUInt16LE(op, 2);
  head.writeUInt32LE(id, 4);
  const parts: Buffer[] = [head];
  for (const [tag, value] of fields) {
    const v = encodeValue(value);
    const fh = Buffer.alloc(6);
    fh.writeUInt16LE(tag, 0);
    fh.writeUInt32LE(v.length, 2);
    parts.push(fh, v);
  }
  return Buffer.concat(parts);
}

export function withLength(body: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32LE(body.length);
  return Buffer.concat([len, body]);
}

export const encodeRequest = (op: number, id: number, fields: Fields = []): Buffer => withLength(requestBody(op, id, fields));

export interface Response {
  op: number;
  id: number;
  status: number;
  fields: Map<number, Buffer>;
}

export const message = (r: Response): string | undefined => r.fields.get(Tag.MESSAGE)?.toString('utf8');
export const json = (r: Response): unknown => {
  const raw = r.fields.get(Tag.JSON);
  return raw === undefined ? undefined : JSON.parse(raw.toString('utf8'));
};
export const slot = (r: Response): number | undefined => r.fields.get(Tag.SLOT)?.readInt32LE(0);

/** Splits a byte stream into responses; throws on anything that is not a well-formed response. */
export class ResponseReader {
  private pending = Buffer.alloc(0);

  push(chunk: Buffer): Response[] {
    this.pending = Buffer.concat([this.pending, chunk]);
    const out: Response[] = [];
    while (this.pending.length >= 4) {
      const len = this.pending.readUInt32LE(0);
      if (len < 12 || len > 17 * 1024 * 1024) throw new Error(`response length ${len} is out of range`);
      if (this.pending.length < 4 + len) break;
      out.push(decodeResponse(this.pending.subarray(4, 4 + len)));
      this.pending = this.pending.subarray(4 + len);
    }
    return out;
  }

  get leftover(): number {
    return this.pending.length;
  }
}

export function decodeResponse(body: Buffer): Response {
  if (body.readUInt8(0) !== 1 || body.readUInt8(1) !== 2) throw new Error('not a version 1 response');
  const r: Response = { op: body.readUInt16LE(2), id: body.readUInt32LE(4), status: body.readInt32LE(8), fields: new Map() };
  let pos = 12;
  while (pos < body.length) {
    if (body.length - pos < 6) throw new Error('response field header past the end');
    const tag = body.readUInt16LE(pos);
    const len = body.readUInt32LE(pos + 2);
    pos += 6;
    if (len > body.length - pos) throw new Error('response field past the end');
    if (r.fields.has(tag)) throw new Error(`response repeats tag ${tag}`);
    r.fields.set(tag, Buffer.from(body.subarray(pos, pos + len)));
    pos += len;
  }
  return r;
}

/** Every response in a complete byte stream (a --stdio run's stdout). */
export function decodeAll(stream: Buffer): Response[] {
  const reader = new ResponseReader();
  const out = reader.push(stream);
  if (reader.leftover !== 0) throw new Error(`${reader.leftover} bytes after the last whole response`);
  return out;
}
