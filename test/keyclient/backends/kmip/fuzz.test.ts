/**
 * The TTLV decoder under fast-check: arbitrary bytes and mutated valid
 * messages never make it throw anything but E_KMIP_DECODE, and what it
 * builds stays proportional to its input (it never trusts a length field
 * to allocate). Generated items round-trip through encode and decode.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { KeyClientError } from '../../../../src/keyclient/errors.js';
import { decodeTtlv, encodeTtlv, type TtlvItem } from '../../../../src/keyclient/backends/kmip/ttlv.js';

const limits = { maxBytes: 64 * 1024 };
const tag = fc.oneof(fc.integer({ min: 0x420000, max: 0x4201ff }), fc.integer({ min: 0x540000, max: 0x5400ff }));

const { item } = fc.letrec<{ item: TtlvItem }>((tie) => ({
  item: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    rec('integer', fc.integer({ min: -0x80000000, max: 0x7fffffff })),
    rec('longInteger', fc.bigInt({ min: -(1n << 63n), max: (1n << 63n) - 1n })),
    rec('bigInteger', fc.bigInt({ min: -(1n << 200n), max: 1n << 200n })),
    rec('enumeration', fc.integer({ min: 0, max: 0xffffffff })),
    rec('boolean', fc.boolean()),
    rec('textString', fc.string({ unit: 'binary', maxLength: 40 })),
    rec('byteString', fc.uint8Array({ maxLength: 40 }).map((a) => Buffer.from(a))),
    rec('dateTime', fc.bigInt({ min: -(1n << 63n), max: (1n << 63n) - 1n })),
    rec('interval', fc.integer({ min: 0, max: 0xffffffff })),
    rec('structure', fc.array(tie('item'), { maxLength: 4 })),
  ),
}));

/** A generated item; plain objects (fast-check makes null-prototype records by default), so deepEqual compares like with like. */
function rec<T extends TtlvItem['type'], V>(type: T, value: fc.Arbitrary<V>) {
  return fc.record({ tag, type: fc.constant(type), value }, { noNullPrototype: true }) as unknown as fc.Arbitrary<TtlvItem>;
}

/** Counts what a decode built, to bound it by the input's size. */
function itemsIn(item: TtlvItem): number {
  return item.type === 'structure' ? 1 + item.value.reduce((n, c) => n + itemsIn(c), 0) : 1;
}

/** Decodes, and fails the property on any exception but E_KMIP_DECODE. */
function decodeOrTypedError(bytes: Buffer): void {
  try {
    const decoded = decodeTtlv(bytes, limits);
    // Every item takes at least its 8-byte header of the input.
    assert.ok(itemsIn(decoded) * 8 <= bytes.length);
  } catch (err) {
    if (err instanceof KeyClientError && err.code === 'E_KMIP_DECODE') return;
    throw err;
  }
}

describe('TTLV decoder fuzzing', () => {
  it('encode then decode gives back every generated item', () => {
    fc.assert(
      fc.property(item, (original) => {
        assert.deepEqual(decodeTtlv(encodeTtlv(original), limits), original);
      }),
      { numRuns: 10000 },
    );
  });

  it('arbitrary bytes decode or fail with E_KMIP_DECODE, nothing else', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 512 }), (bytes) => decodeOrTypedError(Buffer.from(bytes))), { numRuns: 20000 });
  });

  it('bytes that start like a message (0x42 tag, plausible type) decode or fail with E_KMIP_DECODE', () => {
    const header = fc.tuple(fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 0, max: 12 }), fc.integer({ min: 0, max: 0xffffffff }));
    fc.assert(
      fc.property(header, fc.uint8Array({ maxLength: 256 }), ([low, type, length], rest) => {
        const head = Buffer.alloc(8);
        head.writeUIntBE(0x420000 | low, 0, 3);
        head.writeUInt8(type, 3);
        head.writeUInt32BE(length, 4);
        decodeOrTypedError(Buffer.concat([head, rest]));
      }),
      { numRuns: 20000 },
    );
  });

  it('valid messages with bytes flipped, cut or inserted decode or fail with E_KMIP_DECODE', () => {
    const mutation = fc.oneof(
      fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
      fc.record({ kind: fc.constant('cut' as const), at: fc.nat() }),
      fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 16 }) }),
    );
    fc.assert(
      fc.property(item, fc.array(mutation, { minLength: 1, maxLength: 4 }), (original, mutations) => {
        let bytes = encodeTtlv(original);
        for (const m of mutations) {
          const at = bytes.length === 0 ? 0 : m.at % bytes.length;
          if (m.kind === 'flip') {
            bytes = Buffer.from(bytes);
            bytes[at] = m.value;
          } else if (m.kind === 'cut') bytes = bytes.subarray(0, at);
          else bytes = Buffer.concat([bytes.subarray(0, at), Buffer.from(m.bytes), bytes.subarray(at)]);
        }
        decodeOrTypedError(bytes);
      }),
      { numRuns: 10000 },
    );
  });

  it('a length field announcing 4 GiB allocates nothing: E_KMIP_DECODE at once, heap unchanged', () => {
    const before = process.memoryUsage().arrayBuffers;
    for (let type = 1; type <= 10; type += 1) {
      const head = Buffer.from([0x42, 0x00, 0x78, type, 0xff, 0xff, 0xff, 0xf8, 0, 0, 0, 0, 0, 0, 0, 0]);
      decodeOrTypedError(head);
      assert.throws(() => decodeTtlv(head, limits), (err: unknown) => err instanceof KeyClientError && err.code === 'E_KMIP_DECODE');
    }
    assert.ok(process.memoryUsage().arrayBuffers - before < 1 << 20, 'no buffer of the announced size was made');
  });
});
