import type { IncomingMessage } from 'node:http';
import type { ZodType } from 'zod';
import { PortcullisError } from '../../errors.js';
import { daemonError } from '../errors.js';
import { quoted } from './answer.js';

/**
 * Request bodies: bounded, complete, strict UTF-8 JSON, validated by the
 * route's schema. Nothing here is lenient: a body that is not exactly what
 * the caller meant is refused rather than guessed at.
 */

/**
 * Reads at most `limit` bytes; a declared or actual larger body is refused
 * without reading on. Settles when the body ends, or when the connection goes
 * first (a client gone, or cut off at limits.body_timeout_seconds), so no
 * handler waits forever on a body that never completes.
 */
export function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length'] ?? '0');
  if (declared > limit) return Promise.reject(tooLarge(limit, declared));
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size > limit) {
        // Not read on here; the refusal decides what becomes of the rest (answer.ts, linger.ts).
        req.off('data', onData);
        req.pause();
        reject(tooLarge(limit, size));
        return;
      }
      chunks.push(chunk);
    };
    req.on('data', onData);
    let ended = false;
    // A client gone mid-body is its own failure, not the daemon's: never an E_INTERNAL in the log.
    // After 'end' there is nothing to refuse: the error (and its stack trace) is not even made, as
    // it was for every request's 'close', about a twentieth of the daemon's CPU on the key path.
    const cutShort = () => {
      if (!ended) reject(daemonError('E_BAD_REQUEST', `The connection closed after ${size} bytes of the body; nothing was done`, { details: { received: size } }));
    };
    req.on('end', () => {
      ended = true;
      resolve(Buffer.concat(chunks));
    });
    req.on('error', cutShort);
    req.on('close', cutShort);
  });
}

function tooLarge(limit: number, size: number): PortcullisError {
  return daemonError('E_BODY_TOO_LARGE', `Request body of ${size} bytes exceeds limits.max_body_bytes (${limit}); not read`, { details: { limit, size } });
}

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * Strict UTF-8, then JSON, then the schema. A lenient decode would turn
 * invalid bytes into U+FFFD and act on a project or key id the caller never
 * sent.
 */
export function parseBody(raw: Buffer, schema: ZodType): unknown {
  let text: string;
  try {
    text = utf8.decode(raw);
  } catch {
    throw daemonError('E_BAD_REQUEST', 'Request body is not valid UTF-8; refusing');
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw daemonError('E_BAD_REQUEST', 'Request body is not valid JSON');
  }
  const broken = illFormedString(json, '');
  if (broken !== undefined) {
    throw daemonError('E_BAD_REQUEST', `Request body is invalid: ${broken || '(body)'} holds a lone UTF-16 surrogate (a \\uD800–\\uDFFF escape without its pair), which no id or name can contain; refusing`, { details: { path: broken } });
  }
  const result = schema.safeParse(json);
  if (!result.success) {
    // Key names are the caller's text: quoted short, so a body of a thousand odd keys does not come back twice its size.
    const issues = result.error.issues.slice(0, 50).map((i) => ({ path: quoted(i.path.map(String).join('.'), 100), message: i.code === 'unrecognized_keys' ? `unknown key(s) ${quoted(i.keys.join(', '))}` : i.message }));
    throw daemonError('E_BAD_REQUEST', `Request body is invalid: ${issues.map((i) => `${i.path || '(body)'}: ${i.message}`).join('; ')}`, { details: { issues } });
  }
  return result.data;
}

/**
 * The path of the first string (value or key) that is not well-formed
 * Unicode, or undefined. JSON's \\u escapes can spell a lone surrogate that
 * strict UTF-8 decoding never sees; such a project id would be stored one
 * way (UTF-8 turns it into U+FFFD) and compared another, so a key bound to
 * it fails its keystore authentication: a false tampering alarm.
 */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
const wellFormed = (text: string): boolean => !LONE_SURROGATE.test(text);

function illFormedString(value: unknown, path: string): string | undefined {
  // A loop, not recursion: bodies may nest half a million deep, which a recursive walk would not survive.
  const stack: Array<[unknown, string]> = [[value, path]];
  for (let item = stack.pop(); item !== undefined; item = stack.pop()) {
    const [inner, at] = item;
    if (typeof inner === 'string') {
      if (!wellFormed(inner)) return at;
    } else if (typeof inner === 'object' && inner !== null) {
      for (const [key, next] of Object.entries(inner)) {
        if (!wellFormed(key)) return at === '' ? '(a key)' : `${at} (a key)`;
        stack.push([next, at === '' ? key : `${at}.${key}`]);
      }
    }
  }
  return undefined;
}
