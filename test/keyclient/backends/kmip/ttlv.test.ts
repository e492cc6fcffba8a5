/**
 * TTLV items against the encoding examples of the KMIP specification
 * (KMIP 1.x §9.1.2 "Examples"; the same ten in 2.0 §9.1.2), byte-exact both
 * ways, then the decoder's strictness on what those examples do not cover.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { decodeTtlv, encodeTtlv, type TtlvItem } from '../../../../src/keyclient/backends/kmip/ttlv.js';
import { throwsWithCode } from '../../../helpers/errors.js';

/** The spec writes "42 00 20 | 02 | 00 00 00 04 | ..."; spaces and bars are for reading. */
const hex = (spec: string) => Buffer.from(spec.replace(/[\s|]/g, ''), 'hex');
const limits = { maxBytes: 1 << 20 };

// Tag 0x420020 is Compromise Date; the spec's examples use it for every type.
const T = 0x420020;
const examples: Array<{ what: string; item: TtlvItem; bytes: string }> = [
  { what: 'an Integer containing the decimal value 8', item: { tag: T, type: 'integer', value: 8 }, bytes: '42 00 20 | 02 | 00 00 00 04 | 00 00 00 08 00 00 00 00' },
  { what: 'a Long Integer containing the decimal value 123456789000000000', item: { tag: T, type: 'longInteger', value: 123456789000000000n }, bytes: '42 00 20 | 03 | 00 00 00 08 | 01 B6 9B 4B A5 74 92 00' },
  {
    what: 'a Big Integer containing the decimal value 1234567890000000000000000000',
    item: { tag: T, type: 'bigInteger', value: 1234567890000000000000000000n },
    bytes: '42 00 20 | 04 | 00 00 00 10 | 00 00 00 00 03 FD 35 EB 6B C2 DF 46 18 08 00 00',
  },
  { what: 'an Enumeration with value 255', item: { tag: T, type: 'enumeration', value: 255 }, bytes: '42 00 20 | 05 | 00 00 00 04 | 00 00 00 FF 00 00 00 00' },
  { what: 'a Boolean with the value True', item: { tag: T, type: 'boolean', value: true }, bytes: '42 00 20 | 06 | 00 00 00 08 | 00 00 00 00 00 00 00 01' },
  { what: 'a Text String with the value "Hello World"', item: { tag: T, type: 'textString', value: 'Hello World' }, bytes: '42 00 20 | 07 | 00 00 00 0B | 48 65 6C 6C 6F 20 57 6F 72 6C 64 00 00 00 00 00' },
  { what: 'a Byte String with the value { 0x01, 0x02, 0x03 }', item: { tag: T, type: 'byteString', value: Buffer.from([1, 2, 3]) }, bytes: '42 00 20 | 08 | 00 00 00 03 | 01 02 03 00 00 00 00 00' },
  { what: 'a Date-Time containing Friday, March 14, 2008, 11:56:40 GMT', item: { tag: T, type: 'dateTime', value: 0x47da67f8n }, bytes: '42 00 20 | 09 | 00 00 00 08 | 00 00 00 00 47 DA 67 F8' },
  { what: 'an Interval containing the value for 10 days', item: { tag: T, type: 'interval', value: 864000 }, bytes: '42 00 20 | 0A | 00 00 00 04 | 00 0D 2F 00 00 00 00 00' },
  {
    what: 'a Structure containing an Enumeration, value 254, followed by an Integer, value 255',
    item: { tag: T, type: 'structure', value: [{ tag: 0x420004, type: 'enumeration', value: 254 }, { tag: 0x420005, type: 'integer', value: 255 }] },
    bytes: '42 00 20 | 01 | 00 00 00 20 | 42 00 04 | 05 | 00 00 00 04 | 00 00 00 FE 00 00 00 00 | 42 00 05 | 02 | 00 00 00 04 | 00 00 00 FF 00 00 00 00',
  },
];

describe('TTLV: the specification\'s examples (§9.1.2)', () => {
  for (const example of examples) {
    it(`encodeTtlv() and decodeTtlv() of ${example.what} are byte-exact`, () => {
      assert.deepEqual(encodeTtlv(example.item), hex(example.bytes));
      assert.deepEqual(decodeTtlv(hex(example.bytes), limits), example.item);
    });
  }

  it('the Date-Time example is the date the spec names', () => {
    const item = decodeTtlv(hex(examples[7]?.bytes as string), limits);
    assert.equal(item.type === 'dateTime' && new Date(Number(item.value) * 1000).toISOString(), '2008-03-14T11:56:40.000Z');
  });
});

describe('TTLV: encoding edge cases', () => {
  it('negative integers and big integers use two\'s complement, big integers sign-extended to 8 bytes', () => {
    assert.deepEqual(encodeTtlv({ tag: T, type: 'integer', value: -1 }), hex('420020 02 00000004 FFFFFFFF 00000000'));
    assert.deepEqual(encodeTtlv({ tag: T, type: 'bigInteger', value: -1n }), hex('420020 04 00000008 FFFFFFFFFFFFFFFF'));
    assert.deepEqual(encodeTtlv({ tag: T, type: 'bigInteger', value: 1n << 63n }), hex('420020 04 00000010 0000000000000000 8000000000000000'));
    assert.deepEqual(decodeTtlv(hex('420020 04 00000008 FFFFFFFFFFFFFFFE'), limits), { tag: T, type: 'bigInteger', value: -2n });
  });

  it('multi-byte UTF-8 text is measured in bytes', () => {
    const item: TtlvItem = { tag: T, type: 'textString', value: 'clé' };
    assert.deepEqual(encodeTtlv(item), hex('420020 07 00000004 636CC3A9 00000000'));
    assert.deepEqual(decodeTtlv(encodeTtlv(item), limits), item);
  });

  it('values a type cannot carry are E_INVALID_ARGUMENT, never a wrong encoding', () => {
    throwsWithCode(() => encodeTtlv({ tag: T, type: 'integer', value: 2 ** 31 }), 'E_INVALID_ARGUMENT');
    throwsWithCode(() => encodeTtlv({ tag: T, type: 'enumeration', value: -1 }), 'E_INVALID_ARGUMENT');
    throwsWithCode(() => encodeTtlv({ tag: T, type: 'integer', value: 1.5 }), 'E_INVALID_ARGUMENT');
    throwsWithCode(() => encodeTtlv({ tag: 0x1000000, type: 'integer', value: 1 }), 'E_INVALID_ARGUMENT');
  });
});

describe('TTLV: the decoder is strict', () => {
  const bad: Array<[string, string]> = [
    ['a tag that starts neither 0x42 nor 0x54', '430020 02 00000004 00000008 00000000'],
    ['an unknown item type', '420020 0B 00000004 00000008 00000000'],
    ['an Integer of length 8', '420020 02 00000008 00000000 00000008'],
    ['a Boolean of value 2', '420020 06 00000008 0000000000000002'],
    ['non-zero padding after an Integer', '420020 02 00000004 00000008 00000001'],
    ['non-zero padding after a Text String', '420020 07 00000001 41 00000000000001'],
    ['a Text String that is not UTF-8', '420020 07 00000002 C328 000000000000'],
    ['a Big Integer of length 4', '420020 04 00000004 00000001 00000000'],
    ['a length past the end of the input', '420020 08 00000010 0102030400000000'],
    ['a header cut short', '420020 02 0000'],
    ['a Structure whose items overrun it', '420020 01 00000008 420004 05 00000004 000000FE 00000000'],
    ['bytes after the message', '420020 02 00000004 00000008 00000000 00'],
    ['an empty input', ''],
  ];
  for (const [what, bytes] of bad) {
    it(`refuses ${what} with E_KMIP_DECODE`, () => {
      throwsWithCode(() => decodeTtlv(hex(bytes), limits), 'E_KMIP_DECODE');
    });
  }

  it('accepts extension tags (0x54....)', () => {
    assert.deepEqual(decodeTtlv(hex('540001 02 00000004 00000007 00000000'), limits), { tag: 0x540001, type: 'integer', value: 7 });
  });

  it('refuses input over the size limit before reading it, and structures nested deeper than maxDepth', () => {
    const item = hex(examples[0]?.bytes as string);
    throwsWithCode(() => decodeTtlv(item, { maxBytes: item.length - 1 }), 'E_KMIP_DECODE');
    let nested: TtlvItem = { tag: T, type: 'integer', value: 1 };
    for (let i = 0; i < 5; i += 1) nested = { tag: T, type: 'structure', value: [nested] };
    const encoded = encodeTtlv(nested);
    assert.deepEqual(decodeTtlv(encoded, { maxBytes: 1024, maxDepth: 5 }), nested);
    throwsWithCode(() => decodeTtlv(encoded, { maxBytes: 1024, maxDepth: 4 }), 'E_KMIP_DECODE');
  });
});
