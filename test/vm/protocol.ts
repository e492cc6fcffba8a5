import { VmError } from './errors.js';

/**
 * The command channel's wire format, the same on the virtio-serial port
 * between host and guest agent and on the broker's unix socket:
 *
 *   frame = u32be headerBytes | u32be bodyBytes | header (UTF-8 JSON) | body
 *
 * Length-prefixed rather than line-based because bodies are arbitrary bytes
 * (keys on stdin, device contents on stdout). Requests carry an id so many
 * commands can be in flight at once (concurrent opens are a test case).
 */
export interface HelloHeader {
  type: 'hello';
  /** The peer runner's `where`. */
  where: string;
}
export interface RunHeader {
  type: 'run';
  id: number;
  argv: string[];
  cwd?: string;
  env?: Record<string, string>;
  timeoutMs: number;
  maxOutputBytes: number;
}
/** Body: stdout bytes then stderr bytes. */
export interface ResultHeader {
  type: 'result';
  id: number;
  code: number | null;
  signal: string | null;
  timedOut: boolean;
  stdoutBytes: number;
}
export interface ErrorHeader {
  type: 'error';
  id: number;
  code: string;
  message: string;
  /** For E_RUN_SPAWN: the errno name (ENOENT, EACCES), so callers can say "not installed". */
  errno?: string;
}
/**
 * A device operation (src/luks/device/ops.ts: stat, read, readFiles, list,
 * replaceSymlink) run by the peer in-process, so the harness serves the
 * production implementation from the guest's kernel. Answered by an
 * OpResultHeader, or an ErrorHeader with code E_OP_FAILED and the errno.
 */
export interface OpHeader {
  type: 'op';
  id: number;
  op: string;
  args: unknown[];
}
/** Body: the answer's bytes when it is binary (a read), else empty. */
export interface OpResultHeader {
  type: 'opResult';
  id: number;
  json: unknown;
  binary: boolean;
}
export type Header = HelloHeader | RunHeader | ResultHeader | ErrorHeader | OpHeader | OpResultHeader;
export interface Frame {
  header: Header;
  body: Buffer;
}

/** Bounds what a peer can make us buffer: 16 MiB of output plus headroom. */
export const MAX_HEADER_BYTES = 1024 * 1024;
export const MAX_BODY_BYTES = 64 * 1024 * 1024;

export function encodeFrame(header: Header, body: Uint8Array = Buffer.alloc(0)): Buffer {
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const prefix = Buffer.alloc(8);
  prefix.writeUInt32BE(json.length, 0);
  prefix.writeUInt32BE(body.byteLength, 4);
  return Buffer.concat([prefix, json, body]);
}

/**
 * Splits a byte stream into frames; keeps a partial frame until the rest
 * arrives. Chunks are kept as a list and joined once per frame: the guest's
 * virtio port delivers 4 KiB reads, and joining on every chunk made a 1 MiB
 * frame cost O(n^2) copies.
 */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private length = 0;

  /** @throws VmError E_VM_CHANNEL on an oversized or malformed frame */
  push(chunk: Buffer): Frame[] {
    this.chunks.push(chunk);
    this.length += chunk.length;
    const frames: Frame[] = [];
    for (;;) {
      if (this.length < 8) break;
      const prefix = this.peek(8);
      const headerBytes = prefix.readUInt32BE(0);
      const bodyBytes = prefix.readUInt32BE(4);
      if (headerBytes > MAX_HEADER_BYTES || bodyBytes > MAX_BODY_BYTES) {
        throw new VmError('E_VM_CHANNEL', `Frame of ${headerBytes}+${bodyBytes} bytes exceeds the channel's limits, refusing`);
      }
      const end = 8 + headerBytes + bodyBytes;
      if (this.length < end) break;
      const all = this.peek(end);
      const header = parseHeader(all.subarray(8, 8 + headerBytes).toString('utf8'));
      // Copy the body out so later frames do not pin this buffer.
      frames.push({ header, body: Buffer.from(all.subarray(8 + headerBytes, end)) });
      const rest = this.chunks[0] === undefined ? Buffer.alloc(0) : this.chunks[0].subarray(end);
      this.chunks = rest.length === 0 ? [] : [rest];
      this.length = rest.length;
    }
    return frames;
  }

  /** The first `n` buffered bytes as one buffer, merging chunks only when needed. */
  private peek(n: number): Buffer {
    const first = this.chunks[0];
    if (first !== undefined && first.length >= n) return first;
    const merged = Buffer.concat(this.chunks, this.length);
    this.chunks = [merged];
    return merged;
  }
}

function bad(what: string): never {
  throw new VmError('E_VM_CHANNEL', `Malformed frame header: ${what}`);
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isId = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;

function stringRecord(v: unknown): Record<string, string> | undefined {
  if (v === undefined) return undefined;
  if (!isRecord(v) || !Object.values(v).every((x) => typeof x === 'string')) bad('env is not a string map');
  return v as Record<string, string>;
}

/** Validates a header from the peer field by field; the peer is a separate process, possibly a broken one. */
export function parseHeader(text: string): Header {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    bad('not JSON');
  }
  if (!isRecord(v)) bad('not an object');
  switch (v.type) {
    case 'hello':
      if (typeof v.where !== 'string') bad('hello without where');
      return { type: 'hello', where: v.where };
    case 'run': {
      if (!isId(v.id)) bad('run without id');
      if (!Array.isArray(v.argv) || !v.argv.every((a) => typeof a === 'string')) bad('run argv is not a string array');
      if (v.cwd !== undefined && typeof v.cwd !== 'string') bad('run cwd is not a string');
      if (!isId(v.timeoutMs) || !isId(v.maxOutputBytes)) bad('run limits are not integers');
      const env = stringRecord(v.env);
      const run: RunHeader = { type: 'run', id: v.id, argv: v.argv as string[], timeoutMs: v.timeoutMs, maxOutputBytes: v.maxOutputBytes };
      if (typeof v.cwd === 'string') run.cwd = v.cwd;
      if (env !== undefined) run.env = env;
      return run;
    }
    case 'result':
      if (!isId(v.id) || !isId(v.stdoutBytes)) bad('result without id or stdoutBytes');
      if (v.code !== null && !Number.isInteger(v.code)) bad('result code is not an integer or null');
      if (v.signal !== null && typeof v.signal !== 'string') bad('result signal is not a string or null');
      if (typeof v.timedOut !== 'boolean') bad('result timedOut is not a boolean');
      return { type: 'result', id: v.id, code: v.code as number | null, signal: v.signal, timedOut: v.timedOut, stdoutBytes: v.stdoutBytes };
    case 'op':
      if (!isId(v.id) || typeof v.op !== 'string' || !Array.isArray(v.args)) bad('op without id, op or args');
      return { type: 'op', id: v.id, op: v.op, args: v.args as unknown[] };
    case 'opResult':
      if (!isId(v.id) || typeof v.binary !== 'boolean') bad('opResult without id or binary');
      return { type: 'opResult', id: v.id, json: v.json, binary: v.binary };
    case 'error':
      if (!isId(v.id) || typeof v.code !== 'string' || typeof v.message !== 'string') bad('error without id, code or message');
      if (v.errno !== undefined && typeof v.errno !== 'string') bad('error errno is not a string');
      return { type: 'error', id: v.id, code: v.code, message: v.message, ...(typeof v.errno === 'string' ? { errno: v.errno } : {}) };
    default:
      return bad(`unknown type ${JSON.stringify(v.type)}`);
  }
}

/** Name of the virtio-serial port the guest agent serves on (qemu `virtserialport,name=`). */
export const CHANNEL_PORT_NAME = 'org.portcullis.channel.0';
