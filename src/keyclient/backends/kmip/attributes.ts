import { keyError } from '../../errors.js';
import type { ProtocolVersion, RequestItem } from './messages.js';
import { Tag, tagName } from './tags.js';
import type { TtlvItem } from './ttlv.js';

/**
 * Attributes across protocol versions. KMIP 1.x names each attribute in an
 * Attribute structure (Attribute Name text + Attribute Value); KMIP 2.0
 * (§2.1.1, §7.2 of the 2.0 specification) drops the wrapper: an attribute is
 * its value item under the attribute's own tag, gathered in an Attributes
 * structure, and GetAttributes names them by Attribute Reference. The
 * backend builds 1.x payloads; toVersion() rewrites them for a 2.0
 * connection, and attributesOf() reads either form back.
 */

/** Attribute names (1.x) and their tags (2.0), for the attributes this client sends or reads. */
const ATTRIBUTE_TAGS: Record<string, number> = {
  'Unique Identifier': Tag.UniqueIdentifier,
  'Object Type': Tag.ObjectType,
  Name: Tag.Name,
  'Application Specific Information': Tag.ApplicationSpecificInformation,
  'Cryptographic Algorithm': Tag.CryptographicAlgorithm,
  'Cryptographic Length': Tag.CryptographicLength,
  'Cryptographic Usage Mask': Tag.CryptographicUsageMask,
  'Initial Date': Tag.InitialDate,
  State: Tag.State,
};
const ATTRIBUTE_NAMES = new Map<number, string>(Object.entries(ATTRIBUTE_TAGS).map(([name, tag]) => [tag, name]));

/** 1.x attribute containers and what 2.0 calls them. */
const CONTAINERS = new Map<number, number>([
  [Tag.TemplateAttribute, Tag.Attributes],
  [Tag.CommonTemplateAttribute, Tag.CommonAttributes],
  [Tag.PrivateKeyTemplateAttribute, Tag.PrivateKeyAttributes],
  [Tag.PublicKeyTemplateAttribute, Tag.PublicKeyAttributes],
]);

export const isV2 = (v: ProtocolVersion) => v.major >= 2;

/** The 2.0 form of one 1.x Attribute structure: its value under the attribute's tag. */
function unwrap(attribute: TtlvItem): TtlvItem {
  if (attribute.type !== 'structure') throw bug('an Attribute that is not a structure');
  const name = attribute.value.find((i) => i.tag === Tag.AttributeName);
  const value = attribute.value.find((i) => i.tag === Tag.AttributeValue);
  const tag = name?.type === 'textString' ? ATTRIBUTE_TAGS[name.value] : undefined;
  if (tag === undefined || value === undefined) throw bug(`attribute ${name?.type === 'textString' ? name.value : '?'} has no KMIP 2.0 tag here`);
  return { ...value, tag } as TtlvItem;
}

/** Rewrites a 1.x payload for `version` (unchanged below 2.0). */
export function toVersion(version: ProtocolVersion, items: RequestItem[]): RequestItem[] {
  if (!isV2(version)) return items;
  return items.map((item) => {
    const payload: TtlvItem[] = [];
    const loose: TtlvItem[] = [];
    for (const field of item.payload) {
      const container = CONTAINERS.get(field.tag);
      if (container !== undefined && field.type === 'structure') payload.push({ tag: container, type: 'structure', value: field.value.map(unwrap) });
      else if (field.tag === Tag.Attribute) loose.push(unwrap(field)); // Locate's filters
      else if (field.tag === Tag.AttributeName && field.type === 'textString') payload.push({ tag: Tag.AttributeReference, type: 'enumeration', value: referenceTag(field.value) });
      else payload.push(field);
    }
    if (loose.length > 0) payload.push({ tag: Tag.Attributes, type: 'structure', value: loose });
    return { operation: item.operation, payload };
  });
}

function referenceTag(name: string): number {
  const tag = ATTRIBUTE_TAGS[name];
  if (tag === undefined) throw bug(`attribute ${name} has no KMIP 2.0 tag here`);
  return tag;
}

/** The attributes in a GetAttributes answer, named, from a 1.x or a 2.0 payload. */
export function attributesOf(payload: TtlvItem[]): Array<{ name: string; value: TtlvItem }> {
  const out: Array<{ name: string; value: TtlvItem }> = [];
  for (const field of payload) {
    if (field.tag === Tag.Attribute && field.type === 'structure') {
      const name = field.value.find((i) => i.tag === Tag.AttributeName);
      const value = field.value.find((i) => i.tag === Tag.AttributeValue);
      if (name?.type === 'textString' && value !== undefined) out.push({ name: name.value, value });
    } else if (field.tag === Tag.Attributes && field.type === 'structure') {
      for (const value of field.value) {
        const name = ATTRIBUTE_NAMES.get(value.tag);
        if (name !== undefined) out.push({ name, value });
      }
    }
  }
  return out;
}

function bug(what: string) {
  return keyError('E_INVALID_ARGUMENT', `Cannot encode a KMIP 2.0 request: ${what} (${tagName(Tag.Attribute)})`);
}
