/**
 * Whole KMIP messages against the KMIP Test Cases v1.1 (OASIS), section
 * 3.1.1 (symmetric key Create, Get, Destroy) and 3.1.3 (Locate by type and
 * name): the requests we build are byte-identical to the document's, and its
 * responses decode to what it says (the same bytes also appear in PyKMIP's
 * test suite, kmip/tests/unit/core/messages/test_messages.py).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { attributesOf, toVersion } from '../../../../src/keyclient/backends/kmip/attributes.js';
import { CryptographicAlgorithm, ObjectType, Operation, ResultStatus, UsageMask } from '../../../../src/keyclient/backends/kmip/enums.js';
import { attribute, child, enm, int, parseResponse, requestMessage, struct, text } from '../../../../src/keyclient/backends/kmip/messages.js';
import { nameAttribute, secretFromGet } from '../../../../src/keyclient/backends/kmip/objects.js';
import { Tag } from '../../../../src/keyclient/backends/kmip/tags.js';
import { decodeTtlv, encodeTtlv } from '../../../../src/keyclient/backends/kmip/ttlv.js';
import { plainAllocator } from '../../../../src/util/secure-memory.js';

const hex = (lines: string) => Buffer.from(lines.replace(/\s/g, ''), 'hex');
const v11 = { major: 1, minor: 1 };
const limits = { maxBytes: 1 << 20 };

// §3.1.1, Create request: AES, 128 bits, usage mask Encrypt|Decrypt.
const createRequest = hex(`
  42007801000001204200770100000038420069010000002042006A0200000004
  000000010000000042006B0200000004000000010000000042000D0200000004
  000000010000000042000F01000000D842005C05000000040000000100000000
  42007901000000C04200570500000004000000020000000042009101000000A8
  420008010000003042000A070000001743727970746F6772617068696320416C
  676F726974686D0042000B050000000400000003000000004200080100000030
  42000A070000001443727970746F67726170686963204C656E67746800000000
  42000B02000000040000008000000000420008010000003042000A0700000018
  43727970746F67726170686963205573616765204D61736B42000B0200000004
  0000000C00000000`);
// §3.1.1, Create response: the new key's id, time stamp 0x4F9A54E5.
const createResponse = hex(`
  42007B01000000C042007A0100000048420069010000002042006A0200000004
  000000010000000042006B020000000400000001000000004200920900000008
  000000004F9A54E542000D0200000004000000010000000042000F0100000068
  42005C0500000004000000010000000042007F05000000040000000000000000
  42007C0100000040420057050000000400000002000000004200940700000024
  66623462356239632D363138382D346336332D383134322D6665396333323831
  3239666300000000`);
// §3.1.1, Get request and response (the response carries a 3DES key, Raw format).
const getRequest = hex(`
  42007801000000904200770100000038420069010000002042006A0200000004
  000000010000000042006B0200000004000000010000000042000D0200000004
  000000010000000042000F010000004842005C05000000040000000A00000000
  4200790100000030420094070000002434396131636138382D366265612D3466
  62322D623435302D37653538383032633330333800000000`);
const getResponse = hex(`
  42007B010000012842007A0100000048420069010000002042006A0200000004
  000000010000000042006B020000000400000001000000004200920900000008
  000000004F9A54E742000D0200000004000000010000000042000F01000000D0
  42005C05000000040000000A0000000042007F05000000040000000000000000
  42007C01000000A8420057050000000400000002000000004200940700000024
  34396131636138382D366265612D346662322D623435302D3765353838303263
  333033380000000042008F010000006042004001000000584200420500000004
  0000000100000000420045010000002042004308000000187367578051012A6D
  134A855E25C8CD5E4CA131455729D3C842002805000000040000000200000000
  42002A0200000004000000A800000000`);
// §3.1.1, Destroy request.
const destroyRequest = hex(`
  42007801000000904200770100000038420069010000002042006A0200000004
  000000010000000042006B0200000004000000010000000042000D0200000004
  000000010000000042000F010000004842005C05000000040000001400000000
  4200790100000030420094070000002466623462356239632D363138382D3463
  36332D383134322D66653963333238313239666300000000`);
// §3.1.3, Locate request: Object Type Symmetric Key, Name "Key1".
const locateRequest = hex(`
  42007801000000D04200770100000038420069010000002042006A0200000004
  000000010000000042006B0200000004000000010000000042000D0200000004
  000000010000000042000F010000008842005C05000000040000000800000000
  4200790100000070420008010000002842000A070000000B4F626A6563742054
  797065000000000042000B050000000400000002000000004200080100000038
  42000A07000000044E616D650000000042000B01000000204200550700000004
  4B6579310000000042005405000000040000000100000000`);

const encoded = (items: Parameters<typeof requestMessage>[1]) => encodeTtlv(requestMessage(v11, items).message);

describe('KMIP Test Cases v1.1: requests are byte-identical', () => {
  it('§3.1.1 Create (AES-128, Encrypt|Decrypt)', () => {
    const template = struct(Tag.TemplateAttribute, [
      attribute('Cryptographic Algorithm', enm(0, CryptographicAlgorithm.AES)),
      attribute('Cryptographic Length', int(0, 128)),
      attribute('Cryptographic Usage Mask', int(0, UsageMask.Encrypt | UsageMask.Decrypt)),
    ]);
    assert.deepEqual(encoded([{ operation: Operation.Create, payload: [enm(Tag.ObjectType, ObjectType.SymmetricKey), template] }]), createRequest);
  });

  it('§3.1.1 Get and Destroy', () => {
    assert.deepEqual(encoded([{ operation: Operation.Get, payload: [text(Tag.UniqueIdentifier, '49a1ca88-6bea-4fb2-b450-7e58802c3038')] }]), getRequest);
    assert.deepEqual(encoded([{ operation: Operation.Destroy, payload: [text(Tag.UniqueIdentifier, 'fb4b5b9c-6188-4c63-8142-fe9c328129fc')] }]), destroyRequest);
  });

  it('§3.1.3 Locate by Object Type and Name', () => {
    const payload = [attribute('Object Type', enm(0, ObjectType.SymmetricKey)), nameAttribute('Key1')];
    assert.deepEqual(encoded([{ operation: Operation.Locate, payload }]), locateRequest);
  });

  it('every request decodes and re-encodes to the same bytes', () => {
    for (const message of [createRequest, getRequest, destroyRequest, locateRequest, createResponse, getResponse]) {
      assert.deepEqual(encodeTtlv(decodeTtlv(message, limits)), message);
    }
  });
});

describe('KMIP Test Cases v1.1: responses decode to what the document says', () => {
  it('§3.1.1 Create response: success, a symmetric key, its id', () => {
    const response = parseResponse(decodeTtlv(createResponse, limits), [Buffer.alloc(4)]);
    assert.deepEqual(response.version, v11);
    const item = response.items[0];
    assert.equal(item?.operation, Operation.Create);
    assert.equal(item?.status, ResultStatus.Success);
    assert.equal(child(item?.payload ?? [], Tag.ObjectType, 'enumeration').value, ObjectType.SymmetricKey);
    assert.equal(child(item?.payload ?? [], Tag.UniqueIdentifier, 'textString').value, 'fb4b5b9c-6188-4c63-8142-fe9c328129fc');
    const header = child(decodeTtlv(createResponse, limits), Tag.ResponseHeader, 'structure');
    assert.equal(child(header, Tag.TimeStamp, 'dateTime').value, 0x4f9a54e5n);
  });

  it('§3.1.1 Get response: the 24-byte 3DES key lands in secure memory byte for byte', () => {
    const response = parseResponse(decodeTtlv(getResponse, limits), [Buffer.alloc(4)]);
    const secret = secretFromGet(response.items[0]?.payload ?? [], 'symmetric', plainAllocator());
    assert.deepEqual(secret.view(), Buffer.from('7367578051012A6D134A855E25C8CD5E4CA131455729D3C8', 'hex'));
  });
});

describe('KMIP 2.0 attribute encoding (2.0 specification §7.2: attributes under their own tags)', () => {
  const v20 = { major: 2, minor: 0 };
  const template = struct(Tag.TemplateAttribute, [attribute('Cryptographic Algorithm', enm(0, CryptographicAlgorithm.AES)), attribute('Cryptographic Length', int(0, 128)), nameAttribute('Key1')]);

  it('toVersion() turns a Template-Attribute into an Attributes structure of tagged values, and leaves 1.x alone', () => {
    const create = [{ operation: Operation.Create, payload: [enm(Tag.ObjectType, ObjectType.SymmetricKey), template] }];
    assert.deepEqual(toVersion(v11, create), create);
    const [converted] = toVersion(v20, create);
    assert.deepEqual(converted?.payload, [
      enm(Tag.ObjectType, ObjectType.SymmetricKey),
      struct(Tag.Attributes, [enm(Tag.CryptographicAlgorithm, CryptographicAlgorithm.AES), int(Tag.CryptographicLength, 128), struct(Tag.Name, [text(Tag.NameValue, 'Key1'), enm(Tag.NameType, 1)])]),
    ]);
  });

  it('Locate filters gather into one Attributes structure; GetAttributes names become Attribute References', () => {
    const [locate] = toVersion(v20, [{ operation: Operation.Locate, payload: [int(Tag.MaximumItems, 10), attribute('Object Type', enm(0, ObjectType.SymmetricKey)), nameAttribute('Key1')] }]);
    assert.deepEqual(locate?.payload.map((i) => i.tag), [Tag.MaximumItems, Tag.Attributes]);
    const [get] = toVersion(v20, [{ operation: Operation.GetAttributes, payload: [text(Tag.UniqueIdentifier, '1'), text(Tag.AttributeName, 'State')] }]);
    assert.deepEqual(get?.payload[1], enm(Tag.AttributeReference, Tag.State));
  });

  it('attributesOf() reads 1.x and 2.0 answers alike', () => {
    const v1 = attributesOf(template.type === 'structure' ? template.value : []);
    const [converted] = toVersion(v20, [{ operation: Operation.Create, payload: [template] }]);
    const v2 = attributesOf(converted?.payload ?? []);
    assert.deepEqual(v1.map((a) => a.name), ['Cryptographic Algorithm', 'Cryptographic Length', 'Name']);
    assert.deepEqual(v2.map((a) => a.name), v1.map((a) => a.name));
    assert.deepEqual(v2.map((a) => (a.value.type === 'structure' ? 'struct' : a.value.value)), [CryptographicAlgorithm.AES, 128, 'struct']);
  });
});
