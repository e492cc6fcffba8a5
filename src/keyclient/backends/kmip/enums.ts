/**
 * KMIP enumeration values this client sends or interprets, named as in the
 * specification (KMIP 1.4 §9.1.3.2; unchanged in 2.0 for these values).
 */

export const Operation = {
  Create: 0x01,
  CreateKeyPair: 0x02,
  Register: 0x03,
  Locate: 0x08,
  Get: 0x0a,
  GetAttributes: 0x0b,
  Activate: 0x12,
  Revoke: 0x13,
  Destroy: 0x14,
  Query: 0x18,
  DiscoverVersions: 0x1e,
} as const;

export const ObjectType = {
  Certificate: 0x01,
  SymmetricKey: 0x02,
  PublicKey: 0x03,
  PrivateKey: 0x04,
  SplitKey: 0x05,
  Template: 0x06,
  SecretData: 0x07,
  OpaqueObject: 0x08,
} as const;

export const ResultStatus = {
  Success: 0x00,
  OperationFailed: 0x01,
  OperationPending: 0x02,
  OperationUndone: 0x03,
} as const;

export const ResultReason = {
  ItemNotFound: 0x01,
  ResponseTooLarge: 0x02,
  AuthenticationNotSuccessful: 0x03,
  InvalidMessage: 0x04,
  OperationNotSupported: 0x05,
  MissingData: 0x06,
  InvalidField: 0x07,
  FeatureNotSupported: 0x08,
  OperationCanceledByRequester: 0x09,
  CryptographicFailure: 0x0a,
  IllegalOperation: 0x0b,
  PermissionDenied: 0x0c,
  ObjectArchived: 0x0d,
  IndexOutOfBounds: 0x0e,
  KeyFormatTypeNotSupported: 0x10,
  KeyValueNotPresent: 0x13,
  // KMIP 2.0 names for "no such object" and "not yours"
  ObjectDestroyed: 0x36,
  ObjectNotFound: 0x37,
  NotAuthorised: 0x39,
  GeneralFailure: 0x100,
} as const;

export const CryptographicAlgorithm = {
  AES: 0x03,
  RSA: 0x04,
  ECDSA: 0x06,
  EC: 0x1a,
} as const;

/** Bit mask (§9.1.3.3.1). */
export const UsageMask = {
  Sign: 0x01,
  Verify: 0x02,
  Encrypt: 0x04,
  Decrypt: 0x08,
  WrapKey: 0x10,
  UnwrapKey: 0x20,
} as const;

export const KeyFormatType = {
  Raw: 0x01,
  Opaque: 0x02,
  PKCS1: 0x03,
  PKCS8: 0x04,
  X509: 0x05,
  TransparentSymmetricKey: 0x07,
} as const;

export const NameType = {
  UninterpretedTextString: 0x01,
  Uri: 0x02,
} as const;

export const SecretDataType = {
  Password: 0x01,
  Seed: 0x02,
} as const;

export const CertificateType = {
  X509: 0x01,
  PGP: 0x02,
} as const;

/**
 * Opaque Data Type has no standard values, only extensions (0x8XXXXXXX);
 * PyKMIP and most servers use 0x80000000 for "none".
 */
export const OpaqueDataType = {
  None: 0x80000000,
} as const;

export const State = {
  PreActive: 0x01,
  Active: 0x02,
  Deactivated: 0x03,
  Compromised: 0x04,
  Destroyed: 0x05,
  DestroyedCompromised: 0x06,
} as const;

export const RevocationReasonCode = {
  Unspecified: 0x01,
  KeyCompromise: 0x02,
  CessationOfOperation: 0x06,
} as const;

/** Name of `value` in `table`, or its hex: for messages. */
export function enumName(table: Record<string, number>, value: number): string {
  for (const [name, v] of Object.entries(table)) if (v === value) return name;
  return `0x${value.toString(16)}`;
}
