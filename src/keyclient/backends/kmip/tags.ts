/**
 * KMIP tags this client sends or reads, named as in the specification's tag
 * table (KMIP 1.4 §9.1.3.1; 2.0 §9.1.3.1 for the 2.0-only ones). Only what we
 * use, plus what servers send back that we decode; tagName() falls back to
 * hex for the rest, for error messages.
 */
export const Tag = {
  ActivationDate: 0x420001,
  ApplicationData: 0x420002,
  ApplicationNamespace: 0x420003,
  ApplicationSpecificInformation: 0x420004,
  Attribute: 0x420008,
  AttributeIndex: 0x420009,
  AttributeName: 0x42000a,
  AttributeValue: 0x42000b,
  BatchCount: 0x42000d,
  BatchErrorContinuationOption: 0x42000e,
  BatchItem: 0x42000f,
  BatchOrderOption: 0x420010,
  Certificate: 0x420013,
  CertificateType: 0x42001d,
  CertificateValue: 0x42001e,
  CommonTemplateAttribute: 0x42001f,
  CompromiseDate: 0x420020,
  CryptographicAlgorithm: 0x420028,
  CryptographicLength: 0x42002a,
  CryptographicUsageMask: 0x42002c,
  InitialDate: 0x420039,
  KeyBlock: 0x420040,
  KeyCompressionType: 0x420041,
  KeyFormatType: 0x420042,
  KeyMaterial: 0x420043,
  KeyValue: 0x420045,
  MaximumItems: 0x42004f,
  MaximumResponseSize: 0x420050,
  Name: 0x420053,
  NameType: 0x420054,
  NameValue: 0x420055,
  ObjectGroup: 0x420056,
  ObjectType: 0x420057,
  OpaqueDataType: 0x420059,
  OpaqueDataValue: 0x42005a,
  OpaqueObject: 0x42005b,
  Operation: 0x42005c,
  PrivateKey: 0x420064,
  PrivateKeyTemplateAttribute: 0x420065,
  PrivateKeyUniqueIdentifier: 0x420066,
  ProtocolVersion: 0x420069,
  ProtocolVersionMajor: 0x42006a,
  ProtocolVersionMinor: 0x42006b,
  PublicKey: 0x42006d,
  PublicKeyTemplateAttribute: 0x42006e,
  PublicKeyUniqueIdentifier: 0x42006f,
  RequestHeader: 0x420077,
  RequestMessage: 0x420078,
  RequestPayload: 0x420079,
  ResponseHeader: 0x42007a,
  ResponseMessage: 0x42007b,
  ResponsePayload: 0x42007c,
  ResultMessage: 0x42007d,
  ResultReason: 0x42007e,
  ResultStatus: 0x42007f,
  RevocationMessage: 0x420080,
  RevocationReason: 0x420081,
  RevocationReasonCode: 0x420082,
  SecretData: 0x420085,
  SecretDataType: 0x420086,
  State: 0x42008d,
  SymmetricKey: 0x42008f,
  TemplateAttribute: 0x420091,
  TimeStamp: 0x420092,
  UniqueBatchItemId: 0x420093,
  UniqueIdentifier: 0x420094,
  VendorIdentification: 0x42009d,
  // KMIP 2.0
  Attributes: 0x420125,
  CommonAttributes: 0x420126,
  PrivateKeyAttributes: 0x420127,
  PublicKeyAttributes: 0x420128,
  AttributeReference: 0x42013b,
} as const;

export type TagName = keyof typeof Tag;

const names = new Map<number, string>(Object.entries(Tag).map(([name, value]) => [value, name]));

/** "UniqueIdentifier" for 0x420094; "tag 0x540001" for what we have no name for. */
export function tagName(tag: number): string {
  return names.get(tag) ?? `tag 0x${tag.toString(16).padStart(6, '0')}`;
}
