/**
 * Malformed HTTP for the socket API fuzz: bytes no HTTP client would send.
 * Every request here is complete as bytes (the parser can decide without
 * waiting for more), and is refused whatever part of it the parser accepts:
 * the base request is an attach with an invalid body.
 */
import fc from 'fast-check';
import { shown, type RawBytes } from './fuzz-kit.js';

const BODY = '{"device":1}';

interface Parts {
  method: string;
  target: string;
  version: string;
  headers: string[];
  body: string;
}

const base = (): Parts => ({
  method: 'PUT',
  target: '/v1/volumes/fuzz-raw',
  version: 'HTTP/1.1',
  headers: ['Host: portcullis', 'Content-Type: application/json', `Content-Length: ${BODY.length}`],
  body: BODY,
});

function render(p: Parts): Buffer {
  return Buffer.from(`${p.method} ${p.target} ${p.version}\r\n${p.headers.map((h) => `${h}\r\n`).join('')}\r\n${p.body}`, 'latin1');
}

// Not HEAD: its answer has no body to check.
const token = fc.string({ unit: fc.constantFrom(...'!#$%&\'*+-.^_`|~ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789'.split('')), minLength: 1, maxLength: 12 }).filter((m) => m !== 'HEAD');
const junk = fc.string({ unit: 'binary-ascii', maxLength: 40 });

/** One corruption of the base request: each leaves it malformed, or well-formed HTTP that the API refuses. */
const corruptions: Array<fc.Arbitrary<(p: Parts) => Parts>> = [
  fc.oneof(token, junk, fc.constantFrom('', 'get', 'G ET', 'CONNECT', 'PRI', 'HEAD\0', 'PUT\t')).map((method) => (p) => ({ ...p, method })),
  fc.oneof(junk, fc.constantFrom('', '*', '//', 'http://x/v1/health', 'v1/health', '/v1/volumes/\0', '/v1/\x7f', '/%', '/v1/volumes/a b', '/v1/volumes/x\ty')).map((target) => (p) => ({ ...p, target })),
  fc.oneof(junk, fc.constantFrom('', 'HTTP/1.2', 'HTTP/2.0', 'HTTP/0.9', 'HTTP/1', 'HTTP/11', 'http/1.1', 'HTTP/1.1 extra', 'HTTPS/1.1')).map((version) => (p) => ({ ...p, version })),
  // Header lines: no colon, bad names, NUL and controls in values, obsolete folding, space before the colon.
  fc.oneof(junk, fc.constantFrom('no colon here', ': empty-name', 'Bad Name: x', 'X-Nul: a\0b', 'X-Ctl: a\x01b', ' folded: yes', 'Name : v', 'X-Del: \x7f', 'Host : x')).map((line) => (p) => ({ ...p, headers: [...p.headers, line] })),
  // Framing: conflicting, negative, non-numeric or huge lengths; unknown or doubled transfer codings; chunked bodies that lie.
  fc
    .constantFrom<Array<[string[], string]>>(
      [[`Content-Length: ${BODY.length}`, 'Content-Length: 3'], BODY],
      [['Content-Length: -1'], BODY],
      [['Content-Length: 1x'], BODY],
      [['Content-Length: 99999999999999999999'], BODY],
      [['Content-Length: 0x10'], BODY],
      [['Content-Length: 1, 2'], BODY],
      [['Transfer-Encoding: chunked', `Content-Length: ${BODY.length}`], BODY],
      [['Transfer-Encoding: gzip'], BODY],
      [['Transfer-Encoding: chunked, chunked'], BODY],
      [['Transfer-Encoding: chunked'], 'zz\r\nxx\r\n0\r\n\r\n'],
      [['Transfer-Encoding: chunked'], '5\r\n{"a":1}\r\n0\r\n\r\n'],
      [['Transfer-Encoding: chunked'], 'c;ext=\0\r\n{"device":1}\r\n0\r\n\r\n'],
      [['Transfer-Encoding: chunked'], '-1\r\n\r\n'],
      [['Transfer-Encoding: chunked'], 'fffffffffffffffffff\r\n'],
    )
    .map(([headers, body]) => (p) => ({ ...p, headers: [...p.headers.filter((h) => !h.startsWith('Content-Length')), ...headers], body })),
  // More than Node's 16 KiB of headers.
  fc.integer({ min: 17_000, max: 40_000 }).map((n) => (p) => ({ ...p, headers: [...p.headers, `X-Big: ${'a'.repeat(n)}`] })),
  fc.integer({ min: 200, max: 400 }).map((n) => (p) => ({ ...p, headers: [...p.headers, ...Array.from({ length: n }, (_, i) => `X-H${i}: ${'b'.repeat(80)}`)] })),
  // No Host header: Node would answer a bare 400 to HTTP/1.1 without one.
  fc.constant((p: Parts) => ({ ...p, headers: p.headers.filter((h) => !h.startsWith('Host')) })),
  // Expectations Node would answer with a bare status.
  fc.constantFrom('Expect: 100-continue-please', 'Expect: x', 'Expect: ').map((line) => (p) => ({ ...p, headers: [...p.headers, line] })),
  // Upgrades to protocols the API does not speak.
  fc.constantFrom(['Connection: Upgrade', 'Upgrade: websocket'], ['Connection: Upgrade, HTTP2-Settings', 'Upgrade: h2c', 'HTTP2-Settings: AAMAAABkAAQAAP__']).map((lines) => (p) => ({ ...p, headers: [...p.headers, ...lines] })),
];

/** Malformed or refused HTTP, as bytes. */
export function rawRequest(): fc.Arbitrary<RawBytes> {
  const corrupted = fc.array(fc.oneof(...corruptions), { minLength: 1, maxLength: 3 }).map((changes) => render(changes.reduce((p, change) => change(p), base())));
  // Random bytes: at least one that is not a line break (those alone are skipped before a request), ended by a blank line.
  const bytes = fc
    .uint8Array({ minLength: 1, maxLength: 256 })
    .filter((a) => a.some((b) => b !== 0x0d && b !== 0x0a))
    .map((a) => Buffer.concat([Buffer.from(a), Buffer.from('\r\n\r\n')]));
  // The HTTP/2 preface on an HTTP/1.1 server.
  const h2 = fc.constant(Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'));
  return fc.oneof({ arbitrary: corrupted, weight: 6 }, { arbitrary: bytes, weight: 3 }, { arbitrary: h2, weight: 1 }).map(shown);
}
