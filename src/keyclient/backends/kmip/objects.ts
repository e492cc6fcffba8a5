import { createPublicKey } from 'node:crypto';
import { keyError } from '../../errors.js';
import type { ManagedObject, ObjectMetadata, ObjectType as PortcullisType } from '../../objects/index.js';
import { copySecret, type SecretBuffer, type SecureAllocator } from '../../../util/secure-memory.js';
import { CertificateType, CryptographicAlgorithm, enumName, KeyFormatType, NameType, ObjectType, OpaqueDataType, SecretDataType, UsageMask } from './enums.js';
import { attributesOf } from './attributes.js';
import { attribute, bytes, child, enm, find, int, struct, text } from './messages.js';
import { Tag } from './tags.js';
import type { TtlvItem } from './ttlv.js';

/**
 * Portcullis objects as KMIP managed objects, and back. Keys travel as Raw
 * (symmetric), PKCS#8 (private) and X.509 SubjectPublicKeyInfo (public)
 * DER; passphrases as Secret Data (Password); opaque data as an Opaque
 * Object; certificates as X.509 Certificate objects.
 *
 * Projects: every object portcullis makes carries an Application Specific
 * Information attribute { namespace "portcullis-project", data: project id },
 * and portcullis shows an object only to the project it names. See docs/kmip.md.
 */

export const PROJECT_NAMESPACE = 'portcullis-project';

export const kmipTypeOf: Record<PortcullisType, number> = {
  symmetric: ObjectType.SymmetricKey,
  passphrase: ObjectType.SecretData,
  opaque: ObjectType.OpaqueObject,
  private: ObjectType.PrivateKey,
  public: ObjectType.PublicKey,
  certificate: ObjectType.Certificate,
};

const portcullisTypeOf = new Map<number, PortcullisType>(Object.entries(kmipTypeOf).map(([k, v]) => [v, k as PortcullisType]));

const algorithms: Record<string, number> = { aes: CryptographicAlgorithm.AES, rsa: CryptographicAlgorithm.RSA, ec: CryptographicAlgorithm.EC };
const algorithmNames = new Map<number, string>([
  [CryptographicAlgorithm.AES, 'aes'],
  [CryptographicAlgorithm.RSA, 'rsa'],
  [CryptographicAlgorithm.EC, 'ec'],
  [CryptographicAlgorithm.ECDSA, 'ec'],
]);

export const algorithmCode = (name: string): number | undefined => algorithms[name.toLowerCase()];

/** The attributes every object portcullis makes carries: its project, and its name when it has one. */
export function ownership(projectId: string, name: string | undefined): TtlvItem[] {
  const attrs = [attribute('Application Specific Information', struct(0, [text(Tag.ApplicationNamespace, PROJECT_NAMESPACE), text(Tag.ApplicationData, projectId)]))];
  if (name !== undefined) attrs.push(nameAttribute(name));
  return attrs;
}

export const nameAttribute = (name: string) => attribute('Name', struct(0, [text(Tag.NameValue, name), enm(Tag.NameType, NameType.UninterpretedTextString)]));

export const usageFor: Record<PortcullisType, number | undefined> = {
  symmetric: UsageMask.Encrypt | UsageMask.Decrypt,
  private: UsageMask.Sign | UsageMask.Decrypt,
  public: UsageMask.Verify | UsageMask.Encrypt,
  passphrase: UsageMask.Encrypt | UsageMask.Decrypt,
  opaque: undefined,
  certificate: UsageMask.Verify,
};

function keyBlock(format: number, material: Buffer, algorithm?: number, bitLength?: number): TtlvItem {
  const fields: TtlvItem[] = [enm(Tag.KeyFormatType, format), struct(Tag.KeyValue, [bytes(Tag.KeyMaterial, material)])];
  if (algorithm !== undefined) fields.push(enm(Tag.CryptographicAlgorithm, algorithm));
  if (bitLength !== undefined) fields.push(int(Tag.CryptographicLength, bitLength));
  return struct(Tag.KeyBlock, fields);
}

/**
 * The Register payload's object for `obj`, and the attributes its type
 * needs. The object's bytes are referenced, not copied: encode and wipe.
 * @throws E_INVALID_ARGUMENT
 */
export function registrable(obj: ManagedObject): { objectType: number; object: TtlvItem; attributes: TtlvItem[] } {
  const material = obj.bytes();
  if (material.length === 0) throw keyError('E_INVALID_ARGUMENT', `Cannot store an empty ${obj.type} object; nothing was sent`);
  const algorithm = obj.algorithm === undefined ? undefined : algorithmCode(obj.algorithm);
  if (obj.algorithm !== undefined && algorithm === undefined && (obj.type === 'symmetric' || obj.type === 'private' || obj.type === 'public')) {
    throw keyError('E_INVALID_ARGUMENT', `The kmip backend cannot store a ${obj.algorithm} key (it knows aes, rsa, ec); nothing was sent`);
  }
  const cryptoAttrs: TtlvItem[] = [];
  if (algorithm !== undefined) cryptoAttrs.push(attribute('Cryptographic Algorithm', enm(0, algorithm)));
  if (obj.bitLength !== undefined && algorithm !== undefined) cryptoAttrs.push(attribute('Cryptographic Length', int(0, obj.bitLength)));
  const usage = usageFor[obj.type];
  if (usage !== undefined) cryptoAttrs.push(attribute('Cryptographic Usage Mask', int(0, usage)));
  switch (obj.type) {
    case 'symmetric':
      if (algorithm === undefined || obj.bitLength === undefined) throw keyError('E_INVALID_ARGUMENT', 'A symmetric key needs its algorithm and bit length to be stored in KMIP; nothing was sent');
      return { objectType: ObjectType.SymmetricKey, object: struct(Tag.SymmetricKey, [keyBlock(KeyFormatType.Raw, material, algorithm, obj.bitLength)]), attributes: cryptoAttrs };
    case 'private':
    case 'public': {
      if (material[0] !== 0x30) throw keyError('E_INVALID_ARGUMENT', `A ${obj.type} key must be DER (${obj.type === 'private' ? 'PKCS#8' : 'SubjectPublicKeyInfo'}); nothing was sent`);
      const format = obj.type === 'private' ? KeyFormatType.PKCS8 : KeyFormatType.X509;
      const tag = obj.type === 'private' ? Tag.PrivateKey : Tag.PublicKey;
      return { objectType: kmipTypeOf[obj.type], object: struct(tag, [keyBlock(format, material, algorithm, obj.bitLength)]), attributes: cryptoAttrs };
    }
    case 'passphrase':
      return {
        objectType: ObjectType.SecretData,
        object: struct(Tag.SecretData, [enm(Tag.SecretDataType, SecretDataType.Password), keyBlock(KeyFormatType.Opaque, material)]),
        attributes: cryptoAttrs,
      };
    case 'opaque':
      return { objectType: ObjectType.OpaqueObject, object: struct(Tag.OpaqueObject, [enm(Tag.OpaqueDataType, OpaqueDataType.None), bytes(Tag.OpaqueDataValue, material)]), attributes: cryptoAttrs };
    case 'certificate':
      return { objectType: ObjectType.Certificate, object: struct(Tag.Certificate, [enm(Tag.CertificateType, CertificateType.X509), bytes(Tag.CertificateValue, material)]), attributes: cryptoAttrs };
  }
}

/** What GetAttributes said about an object, as portcullis metadata. */
export interface KmipMetadata {
  type: PortcullisType | undefined;
  kmipType: number | undefined;
  /** Project ids found in portcullis-project Application Specific Information. */
  projects: string[];
  names: string[];
  meta: ObjectMetadata;
  state: number | undefined;
}

/** The attributes get() and list() ask for. */
export const METADATA_ATTRIBUTES = ['Object Type', 'Name', 'Application Specific Information', 'Cryptographic Algorithm', 'Cryptographic Length', 'Initial Date', 'State'];

export function metadataFrom(id: string, payload: TtlvItem[]): KmipMetadata {
  const out: KmipMetadata = { type: undefined, kmipType: undefined, projects: [], names: [], meta: { id }, state: undefined };
  // KMIP 1.x answers Attribute structures; 2.0 one Attributes structure of tagged values.
  for (const { name, value } of attributesOf(payload)) {
    switch (name) {
      case 'Object Type':
        if (value.type === 'enumeration') {
          out.kmipType = value.value;
          out.type = portcullisTypeOf.get(value.value);
        }
        break;
      case 'Name': {
        const nameValue = find(value, Tag.NameValue, 'textString');
        if (nameValue !== undefined) out.names.push(nameValue.value);
        break;
      }
      case 'Application Specific Information': {
        const ns = find(value, Tag.ApplicationNamespace, 'textString')?.value;
        const data = find(value, Tag.ApplicationData, 'textString')?.value;
        if (ns === PROJECT_NAMESPACE && data !== undefined) out.projects.push(data);
        break;
      }
      case 'Cryptographic Algorithm':
        if (value.type === 'enumeration') {
          const alg = algorithmNames.get(value.value);
          if (alg !== undefined) out.meta.algorithm = alg;
        }
        break;
      case 'Cryptographic Length':
        if (value.type === 'integer') out.meta.bitLength = value.value;
        break;
      case 'Initial Date':
        if (value.type === 'dateTime') out.meta.created = new Date(Number(value.value) * 1000);
        break;
      case 'State':
        if (value.type === 'enumeration') out.state = value.value;
        break;
    }
  }
  if (out.names[0] !== undefined) out.meta.name = out.names[0];
  return out;
}

/**
 * The secret bytes of a Get answer, copied into secure memory; public keys
 * a server keeps as PKCS#1 come back as SubjectPublicKeyInfo, as portcullis
 * hands public keys out.
 * @throws E_BACKEND_PROTOCOL
 */
export function secretFromGet(payload: TtlvItem[], expected: PortcullisType, allocator: SecureAllocator): SecretBuffer {
  const objectType = child(payload, Tag.ObjectType, 'enumeration').value;
  if (portcullisTypeOf.get(objectType) !== expected) {
    throw keyError('E_BACKEND_PROTOCOL', `The KMIP server returned a ${enumName(ObjectType, objectType)} where its attributes said ${expected}`);
  }
  switch (expected) {
    case 'opaque':
      return copySecret(allocator, child(child(payload, Tag.OpaqueObject, 'structure'), Tag.OpaqueDataValue, 'byteString').value);
    case 'certificate':
      return copySecret(allocator, child(child(payload, Tag.Certificate, 'structure'), Tag.CertificateValue, 'byteString').value);
    default: {
      const holder = { symmetric: Tag.SymmetricKey, private: Tag.PrivateKey, public: Tag.PublicKey, passphrase: Tag.SecretData }[expected];
      const block = child(child(payload, holder, 'structure'), Tag.KeyBlock, 'structure');
      const format = child(block, Tag.KeyFormatType, 'enumeration').value;
      const value = child(block, Tag.KeyValue, 'structure');
      const material = find(value, Tag.KeyMaterial, 'byteString');
      if (material === undefined) throw keyError('E_BACKEND_PROTOCOL', `The KMIP server sent ${expected} key material in ${enumName(KeyFormatType, format)} format, which this client does not read`);
      if (expected === 'public' && format === KeyFormatType.PKCS1) {
        const spki = createPublicKey({ key: material.value, format: 'der', type: 'pkcs1' }).export({ type: 'spki', format: 'der' });
        return copySecret(allocator, spki);
      }
      return copySecret(allocator, material.value);
    }
  }
}
