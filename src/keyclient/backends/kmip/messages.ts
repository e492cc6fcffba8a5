import { randomBytes } from 'node:crypto';
import { keyError } from '../../errors.js';
import { enumName, ResultReason, ResultStatus } from './enums.js';
import { Tag, tagName } from './tags.js';
import type { TtlvItem } from './ttlv.js';

/**
 * KMIP request and response messages (KMIP 1.x §7): a header with the
 * protocol version and batch count, then batch items of one operation each.
 * Builders for items keep the rest of the backend free of TTLV details.
 */

export interface ProtocolVersion {
  major: number;
  minor: number;
}

export const versionText = (v: ProtocolVersion) => `${v.major}.${v.minor}`;

// Item builders, named by TTLV type.
export const struct = (tag: number, value: TtlvItem[]): TtlvItem => ({ tag, type: 'structure', value });
export const int = (tag: number, value: number): TtlvItem => ({ tag, type: 'integer', value });
export const enm = (tag: number, value: number): TtlvItem => ({ tag, type: 'enumeration', value });
export const text = (tag: number, value: string): TtlvItem => ({ tag, type: 'textString', value });
export const bytes = (tag: number, value: Buffer): TtlvItem => ({ tag, type: 'byteString', value });
export const bool = (tag: number, value: boolean): TtlvItem => ({ tag, type: 'boolean', value });

export const versionItem = (v: ProtocolVersion): TtlvItem =>
  struct(Tag.ProtocolVersion, [int(Tag.ProtocolVersionMajor, v.major), int(Tag.ProtocolVersionMinor, v.minor)]);

/** A KMIP 1.x Attribute: name, value (AttributeIndex only where a server needs it). */
export function attribute(name: string, value: TtlvItem): TtlvItem {
  return struct(Tag.Attribute, [text(Tag.AttributeName, name), { ...value, tag: Tag.AttributeValue }]);
}

/** Batch Error Continuation Option (§9.1.3.2.x): Continue 1, Stop 2, Undo 3. */
const BATCH_CONTINUE = 0x01;

export interface RequestItem {
  operation: number;
  payload: TtlvItem[];
}

export interface RequestOptions {
  /** Tell the server the largest response we accept (§6.3), so it answers Response Too Large instead of sending it. */
  maxResponseSize?: number;
  /**
   * Carry on with the rest of a batch after an item fails (Batch Error
   * Continuation Option Continue). The default, Stop, leaves later items
   * unanswered, which is what a batch of dependent steps wants.
   */
  continueOnError?: boolean;
}

/**
 * One request message. Batches of more than one item carry Unique Batch Item
 * IDs (required by the spec and by PyKMIP), so answers can be matched.
 */
export function requestMessage(version: ProtocolVersion, items: RequestItem[], options: RequestOptions = {}): { message: TtlvItem; batchIds: Buffer[] } {
  const header: TtlvItem[] = [versionItem(version)];
  if (options.maxResponseSize !== undefined) header.push(int(Tag.MaximumResponseSize, options.maxResponseSize));
  if (options.continueOnError === true) header.push(enm(Tag.BatchErrorContinuationOption, BATCH_CONTINUE));
  header.push(int(Tag.BatchCount, items.length));
  const batchIds = items.map(() => randomBytes(4));
  const batch = items.map((item, i) => {
    const fields: TtlvItem[] = [enm(Tag.Operation, item.operation)];
    if (items.length > 1) fields.push(bytes(Tag.UniqueBatchItemId, batchIds[i] as Buffer));
    fields.push(struct(Tag.RequestPayload, item.payload));
    return struct(Tag.BatchItem, fields);
  });
  return { message: struct(Tag.RequestMessage, [struct(Tag.RequestHeader, header), ...batch]), batchIds };
}

export interface ResponseItem {
  operation: number | undefined;
  status: number;
  reason: number | undefined;
  /** The server's words; may name the object, never holds key material. */
  message: string | undefined;
  payload: TtlvItem[];
}

export interface Response {
  version: ProtocolVersion;
  /** In request order; undefined for an item the server skipped after an earlier one failed (Stop). */
  items: Array<ResponseItem | undefined>;
}

/**
 * Reads a response message, matching batch items to `batchIds` (in request
 * order) when the request was a batch.
 * @throws E_BACKEND_PROTOCOL for a well-formed TTLV message that is not a KMIP response to this request.
 */
export function parseResponse(message: TtlvItem, batchIds: Buffer[]): Response {
  if (message.tag !== Tag.ResponseMessage || message.type !== 'structure') throw protocol(`expected a ResponseMessage, got ${tagName(message.tag)}`);
  const header = child(message, Tag.ResponseHeader, 'structure');
  const version = child(header, Tag.ProtocolVersion, 'structure');
  const parsed: ResponseItem[] = [];
  const byId = new Map<string, ResponseItem>();
  for (const item of message.value) {
    if (item.tag !== Tag.BatchItem || item.type !== 'structure') continue;
    const entry: ResponseItem = {
      operation: optional(item, Tag.Operation, 'enumeration'),
      status: child(item, Tag.ResultStatus, 'enumeration').value,
      reason: optional(item, Tag.ResultReason, 'enumeration'),
      message: optional(item, Tag.ResultMessage, 'textString'),
      payload: optionalStruct(item, Tag.ResponsePayload) ?? [],
    };
    parsed.push(entry);
    const id = optional(item, Tag.UniqueBatchItemId, 'byteString');
    if (id !== undefined) byId.set(id.toString('hex'), entry);
  }
  let items: Array<ResponseItem | undefined> = parsed;
  if (batchIds.length > 1 && byId.size === 0 && parsed.length === 1) {
    // A server that could not parse the request answers one failed item for all of it (Invalid Message).
    items = batchIds.map(() => parsed[0] as ResponseItem);
  } else if (batchIds.length > 1) {
    items = batchIds.map((id) => byId.get(id.toString('hex')));
    if (items.every((i) => i === undefined)) throw protocol('no batch item of the response answers the request');
  } else if (parsed.length !== 1) {
    throw protocol(`expected 1 batch item, got ${parsed.length}`);
  }
  return { version: { major: child(version, Tag.ProtocolVersionMajor, 'integer').value, minor: child(version, Tag.ProtocolVersionMinor, 'integer').value }, items };
}

export function describeFailure(item: ResponseItem): string {
  const status = enumName(ResultStatus, item.status);
  const reason = item.reason === undefined ? '' : ` (${enumName(ResultReason, item.reason)})`;
  return `${status}${reason}${item.message ? `: ${item.message}` : ''}`;
}

type ItemOf<T extends TtlvItem['type']> = Extract<TtlvItem, { type: T }>;

/** The first child of `parent` with `tag`, which must have `type`. @throws E_BACKEND_PROTOCOL */
export function child<T extends TtlvItem['type']>(parent: TtlvItem | TtlvItem[], tag: number, type: T): ItemOf<T> {
  const found = find(parent, tag, type);
  if (found === undefined) throw protocol(`${tagName(tag)} is missing`);
  return found;
}

export function find<T extends TtlvItem['type']>(parent: TtlvItem | TtlvItem[], tag: number, type: T): ItemOf<T> | undefined {
  const items = Array.isArray(parent) ? parent : parent.type === 'structure' ? parent.value : [];
  const found = items.find((i) => i.tag === tag);
  if (found === undefined) return undefined;
  if (found.type !== type) throw protocol(`${tagName(tag)} is a ${found.type}, expected a ${type}`);
  return found as ItemOf<T>;
}

export function findAll(parent: TtlvItem | TtlvItem[], tag: number): TtlvItem[] {
  const items = Array.isArray(parent) ? parent : parent.type === 'structure' ? parent.value : [];
  return items.filter((i) => i.tag === tag);
}

function optional<T extends TtlvItem['type']>(parent: TtlvItem, tag: number, type: T): ItemOf<T>['value'] | undefined {
  return find(parent, tag, type)?.value as ItemOf<T>['value'] | undefined;
}

function optionalStruct(parent: TtlvItem, tag: number): TtlvItem[] | undefined {
  return find(parent, tag, 'structure')?.value;
}

function protocol(message: string) {
  return keyError('E_BACKEND_PROTOCOL', `The KMIP server's response is not what was asked for: ${message}`);
}
