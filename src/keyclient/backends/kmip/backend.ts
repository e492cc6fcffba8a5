import { randomFillSync } from 'node:crypto';
import tls from 'node:tls';
import { defineBackend, type BackendDeps } from '../../backend.js';
import { keyError } from '../../errors.js';
import type { KeyManager, RequestContext } from '../../key-manager.js';
import { objectOfType, objectTypes, type ManagedObject } from '../../objects/index.js';
import type { SecretBuffer } from '../../../util/secure-memory.js';
import { createKmipClient, type KmipClient } from './client.js';
import { CryptographicAlgorithm, ObjectType, Operation, ResultReason, ResultStatus, RevocationReasonCode, State } from './enums.js';
import { attribute, child, enm, findAll, int, struct, text, versionText, type RequestItem, type ResponseItem } from './messages.js';
import { algorithmCode, kmipTypeOf, METADATA_ATTRIBUTES, metadataFrom, ownership, registrable, secretFromGet, usageFor, type KmipMetadata } from './objects.js';
import { adoptObject, openAdoptions } from './adoptions.js';
import { kmipOptionsSchema, parseVersion, readPem, type KmipOptions } from './options.js';
import { notFoundError, resultError } from './results.js';
import { Tag } from './tags.js';
import type { TtlvItem } from './ttlv.js';

/**
 * A KMIP key manager over mutual TLS (KMIP 1.0–1.4 and 2.0). One service
 * certificate serves every project; portcullis records each object's project
 * in an Application Specific Information attribute and shows an object only
 * to that project (others get E_KEY_NOT_FOUND, as if it did not exist).
 * Operations are batched where that saves a round trip.
 */
export const kmipBackend = defineBackend({
  name: 'kmip',
  description: 'KMIP 1.0-2.0 key manager or HSM over mutual TLS (port 5696): Create, Register, Get, Locate, Revoke, Destroy',
  optionsSchema: kmipOptionsSchema,
  create: async (options, deps) => kmipKeyManager(options, deps),
});

export type { KmipOptions } from './options.js';

/** Responses larger than this are refused (announced in each request, checked on every frame). */
export const MAX_RESPONSE_BYTES = 1 << 20;
/** GetAttributes per batch when list() describes what Locate found. */
const LIST_BATCH = 50;
const MAX_LISTED = 10_000;
const AES_CREATED = [128, 192, 256];
/** dm-crypt's usual AES-256-XTS key: KMIP servers rarely create 512-bit AES keys, so it is made here and registered. */
const AES_XTS = 512;
const RSA_LENGTHS = [2048, 3072, 4096];
const MAX_ID = 128;
const GONE = new Set<number>([ResultReason.ItemNotFound, ResultReason.ObjectNotFound, ResultReason.ObjectDestroyed, ResultReason.PermissionDenied, ResultReason.NotAuthorised]);
const MAX_NAME = 255;

/** The KMIP client behind a kmip KeyManager, for tests and benches that count handshakes. */
export interface KmipKeyManager extends KeyManager {
  readonly client: KmipClient;
}

export function kmipKeyManager(options: KmipOptions, deps: BackendDeps): KmipKeyManager {
  const where = `${options.host}:${options.port}`;
  const ca = readPem(options.ca_file, 'CA file');
  const cert = readPem(options.cert_file, 'client certificate');
  const key = readPem(options.key_file, 'client key');
  let secureContext: tls.SecureContext;
  try {
    secureContext = tls.createSecureContext({ ca, cert, key, minVersion: 'TLSv1.2' });
  } catch (err) {
    throw keyError('E_INVALID_ARGUMENT', `Cannot use the KMIP client certificate ${options.cert_file} with key ${options.key_file} and CA ${options.ca_file}: ${(err as Error).message}`, { cause: err });
  } finally {
    key.fill(0);
  }
  const protocolVersion = parseVersion(options.protocol_version);
  const client = createKmipClient({
    host: options.host,
    port: options.port,
    secureContext,
    ...(options.server_name ? { serverName: options.server_name } : {}),
    poolSize: options.pool_size,
    timeoutMs: options.timeout_seconds * 1000,
    maxResponseBytes: MAX_RESPONSE_BYTES,
    ...(protocolVersion ? { protocolVersion } : {}),
  });
  let closed = false;
  const adoptions = options.adoptions_file === undefined ? undefined : openAdoptions(options.adoptions_file, where);

  function check(ctx: RequestContext): void {
    if (closed) throw keyError('E_BACKEND_UNAVAILABLE', `The KMIP key manager for ${where} was closed`, { details: { requestSent: false } });
    if (typeof ctx.projectId !== 'string' || !/^[\x21-\x7e]{1,255}$/.test(ctx.projectId)) {
      throw keyError('E_INVALID_ARGUMENT', 'The project id must be 1 to 255 printable ASCII characters without spaces; nothing was sent');
    }
  }
  const checkId = (id: string) => {
    if (typeof id !== 'string' || !/^[\x21-\x7e]+$/.test(id) || id.length > MAX_ID) throw keyError('E_INVALID_ARGUMENT', `A KMIP unique identifier is 1 to ${MAX_ID} printable characters; nothing was sent`);
  };
  const checkName = (name: string | undefined) => {
    if (name !== undefined && (name.length === 0 || name.length > MAX_NAME)) throw keyError('E_INVALID_ARGUMENT', `An object name is 1 to ${MAX_NAME} characters; nothing was sent`);
  };
  const notFound = (ctx: RequestContext, id: string) => notFoundError(where, ctx.projectId, id);
  const failure = (item: ResponseItem | undefined, what: string, ctx: RequestContext, id?: string) => resultError(item, { where, what, projectId: ctx.projectId, id, maxResponseBytes: MAX_RESPONSE_BYTES });

  const ok = (item: ResponseItem | undefined, what: string, ctx: RequestContext, id?: string): ResponseItem => {
    if (item?.status !== ResultStatus.Success) throw failure(item, what, ctx, id);
    return item;
  };
  const uidOf = (item: ResponseItem, tag: number = Tag.UniqueIdentifier) => child(item.payload, tag, 'textString').value;
  const getAttributes = (id: string, names = METADATA_ATTRIBUTES): RequestItem => ({
    operation: Operation.GetAttributes,
    payload: [text(Tag.UniqueIdentifier, id), ...names.map((n) => text(Tag.AttributeName, n))],
  });
  /** The project's: portcullis made it for the project, or (no project attribute at all) an admin adopted it for it. */
  const mine = (ctx: RequestContext, meta: KmipMetadata) =>
    meta.projects.length === 1 ? meta.projects[0] === ctx.projectId : meta.projects.length === 0 && meta.meta.id !== undefined && adoptions?.projectOf(meta.meta.id) === ctx.projectId;

  /** Metadata of `id` when it is this project's; E_KEY_NOT_FOUND when it is another's or absent. */
  function ownMetadata(ctx: RequestContext, id: string, item: ResponseItem | undefined): KmipMetadata & { type: NonNullable<KmipMetadata['type']> } {
    const meta = metadataFrom(id, ok(item, `GetAttributes of ${id}`, ctx, id).payload);
    if (!mine(ctx, meta)) throw notFound(ctx, id);
    if (meta.type === undefined) throw keyError('E_NOT_SUPPORTED', `KMIP object ${id} is of a type portcullis does not handle`, { details: { id, objectType: meta.kmipType } });
    return meta as KmipMetadata & { type: NonNullable<KmipMetadata['type']> };
  }

  const template = (attrs: TtlvItem[]) => struct(Tag.TemplateAttribute, attrs);

  async function register(ctx: RequestContext, objectItem: ReturnType<typeof registrable>, name: string | undefined, activate: boolean): Promise<string> {
    const payload = [enm(Tag.ObjectType, objectItem.objectType), template([...objectItem.attributes, ...ownership(ctx.projectId, name)]), objectItem.object];
    const id = await client.send([{ operation: Operation.Register, payload }], (r) => uidOf(ok(r.items[0], 'Register', ctx)));
    if (activate) await activateAll(ctx, [id]);
    return id;
  }

  /**
   * Activates what was just made. A second round trip: the ID Placeholder
   * would allow one batch, but PyKMIP (and other servers) insist on an id in Activate.
   */
  async function activateAll(ctx: RequestContext, ids: string[]): Promise<void> {
    await client.send(
      ids.map((id) => ({ operation: Operation.Activate, payload: [text(Tag.UniqueIdentifier, id)] })),
      (r) => r.items.forEach((item, i) => ok(item, `Activate of ${ids[i] as string}`, ctx, ids[i])),
    );
  }

  return {
    name: 'kmip',
    client,
    capabilities: { createKeyPair: true, storeAny: true, deletes: true, projectScoped: true },
    async createKey(ctx, spec) {
      check(ctx);
      checkName(spec.name);
      const aes = spec.algorithm.toLowerCase() === 'aes';
      if (aes && spec.length === AES_XTS) {
        const secret = deps.allocator.alloc(AES_XTS / 8);
        try {
          randomFillSync(secret.view());
          const obj = objectOfType('symmetric', { algorithm: 'aes', bitLength: AES_XTS }, secret);
          return await register(ctx, registrable(obj), spec.name, true);
        } finally {
          secret.wipe();
        }
      }
      if (!aes || !AES_CREATED.includes(spec.length)) {
        throw keyError('E_INVALID_ARGUMENT', `Cannot create a ${spec.algorithm} key of ${spec.length} bits (the kmip backend makes AES keys of ${[...AES_CREATED, AES_XTS].join(', ')} bits)`, {
          details: { algorithm: spec.algorithm, length: spec.length },
        });
      }
      const attrs = [
        attribute('Cryptographic Algorithm', enm(0, CryptographicAlgorithm.AES)),
        attribute('Cryptographic Length', int(0, spec.length)),
        attribute('Cryptographic Usage Mask', int(0, usageFor.symmetric as number)),
        ...ownership(ctx.projectId, spec.name),
      ];
      const id = await client.send([{ operation: Operation.Create, payload: [enm(Tag.ObjectType, ObjectType.SymmetricKey), template(attrs)] }], (r) => uidOf(ok(r.items[0], 'Create', ctx)));
      await activateAll(ctx, [id]);
      return id;
    },
    async createKeyPair(ctx, spec) {
      check(ctx);
      checkName(spec.name);
      if (spec.algorithm.toLowerCase() !== 'rsa' || !RSA_LENGTHS.includes(spec.length)) {
        throw keyError('E_INVALID_ARGUMENT', `Cannot create a ${spec.algorithm} key pair of ${spec.length} bits (the kmip backend makes RSA ${RSA_LENGTHS.join('/')})`, {
          details: { algorithm: spec.algorithm, length: spec.length },
        });
      }
      const common = [attribute('Cryptographic Algorithm', enm(0, algorithmCode('rsa') as number)), attribute('Cryptographic Length', int(0, spec.length)), ...ownership(ctx.projectId, spec.name)];
      const ids = await client.send(
        [
          {
            operation: Operation.CreateKeyPair,
            payload: [
              struct(Tag.CommonTemplateAttribute, common),
              struct(Tag.PrivateKeyTemplateAttribute, [attribute('Cryptographic Usage Mask', int(0, usageFor.private as number))]),
              struct(Tag.PublicKeyTemplateAttribute, [attribute('Cryptographic Usage Mask', int(0, usageFor.public as number))]),
            ],
          },
        ],
        (r) => {
          const item = ok(r.items[0], 'CreateKeyPair', ctx);
          return { privateKeyId: uidOf(item, Tag.PrivateKeyUniqueIdentifier), publicKeyId: uidOf(item, Tag.PublicKeyUniqueIdentifier) };
        },
      );
      await activateAll(ctx, [ids.privateKeyId, ids.publicKeyId]);
      return ids;
    },
    async store(ctx, obj) {
      check(ctx);
      checkName(obj.name);
      if (!objectTypes.includes(obj.type)) throw keyError('E_INVALID_ARGUMENT', `Unknown object type ${String(obj.type)}; nothing was sent`);
      if (obj.metadataOnly || obj.zeroized) throw keyError('E_INVALID_ARGUMENT', `Cannot store ${obj.type} object ${obj.id ?? ''}: it carries no bytes; nothing was sent`);
      return register(ctx, registrable(obj), obj.name, false);
    },
    async get(ctx, id, getOptions) {
      check(ctx);
      checkId(id);
      if (getOptions?.metadataOnly === true) {
        return client.send([getAttributes(id)], (r) => {
          const meta = ownMetadata(ctx, id, r.items[0]);
          return objectOfType(meta.type, meta.meta, undefined);
        }, { repeatable: true });
      }
      // GetAttributes and Get in one batch: one round trip. When the object turns out to be another
      // project's, its bytes are never read out of the response, which is wiped with the rest.
      return client.send([getAttributes(id), { operation: Operation.Get, payload: [text(Tag.UniqueIdentifier, id)] }], (r) => {
        const meta = ownMetadata(ctx, id, r.items[0]);
        const secret: SecretBuffer = secretFromGet(ok(r.items[1], `Get of ${id}`, ctx, id).payload, meta.type, deps.allocator);
        return objectOfType(meta.type, meta.meta, secret);
      }, { repeatable: true });
    },
    async delete(ctx, id) {
      check(ctx);
      checkId(id);
      const meta = await client.send([getAttributes(id, ['Application Specific Information', 'State', 'Object Type'])], (r) => ownMetadata(ctx, id, r.items[0]), { repeatable: true });
      // An Active object must be revoked before it can be destroyed (§4.21); others go at once.
      const items: RequestItem[] = [];
      if (meta.state === State.Active) {
        items.push({ operation: Operation.Revoke, payload: [text(Tag.UniqueIdentifier, id), struct(Tag.RevocationReason, [enm(Tag.RevocationReasonCode, RevocationReasonCode.CessationOfOperation)])] });
      }
      items.push({ operation: Operation.Destroy, payload: [text(Tag.UniqueIdentifier, id)] });
      await client.send(items, (r) => r.items.forEach((item, i) => ok(item, `${i === items.length - 1 ? 'Destroy' : 'Revoke'} of ${id}`, ctx, id)));
      adoptions?.forget(id);
    },
    async list(ctx, listOptions = {}) {
      check(ctx);
      checkName(listOptions.name);
      const filters = [...ownership(ctx.projectId, listOptions.name)];
      if (listOptions.type !== undefined) filters.unshift(attribute('Object Type', enm(0, kmipTypeOf[listOptions.type])));
      const ids = await client.send(
        [{ operation: Operation.Locate, payload: [int(Tag.MaximumItems, MAX_LISTED), ...filters] }],
        (r) => findAll(ok(r.items[0], 'Locate', ctx).payload, Tag.UniqueIdentifier).map((i) => (i.type === 'textString' ? i.value : '')),
        { repeatable: true },
      );
      // Adopted objects carry no project attribute for Locate to match: add them, checked like the rest below.
      for (const adopted of adoptions?.idsOf(ctx.projectId) ?? []) if (!ids.includes(adopted)) ids.push(adopted);
      const found: ManagedObject[] = [];
      for (let i = 0; i < ids.length; i += LIST_BATCH) {
        const chunk = ids.slice(i, i + LIST_BATCH);
        await client.send(chunk.map((id) => getAttributes(id)), (r) => {
          r.items.forEach((item, n) => {
            if (item?.status !== ResultStatus.Success) {
              // Destroyed since Locate, or not ours to read: skip it. Anything else is a real failure.
              if (item !== undefined && item.reason !== undefined && GONE.has(item.reason)) return;
              throw failure(item, `GetAttributes of ${chunk[n] as string}`, ctx);
            }
            const meta = metadataFrom(chunk[n] as string, item.payload);
            // Checked again here: a server that ignores a Locate filter it does not know must not leak other projects' objects.
            if (!mine(ctx, meta) || meta.type === undefined) return;
            if (listOptions.type !== undefined && meta.type !== listOptions.type) return;
            if (listOptions.name !== undefined && !meta.names.includes(listOptions.name)) return;
            found.push(objectOfType(meta.type, { ...meta.meta, ...(listOptions.name !== undefined ? { name: listOptions.name } : {}) }, undefined));
          });
        }, { repeatable: true, continueOnError: true });
      }
      return found;
    },
    adoption: {
      async adopt(ctx, id) {
        check(ctx);
        checkId(id);
        const meta = await client.send([getAttributes(id, ['Object Type', 'Application Specific Information'])], (r) => metadataFrom(id, ok(r.items[0], `GetAttributes of ${id}`, ctx, id).payload), { repeatable: true });
        return adoptObject(ctx, id, meta, adoptions);
      },
    },
    async health() {
      if (closed) return { ok: false, detail: `The KMIP key manager for ${where} was closed` };
      try {
        await client.send([{ operation: Operation.DiscoverVersions, payload: [] }], (r) => ok(r.items[0], 'DiscoverVersions', { projectId: '-' }), { repeatable: true });
        const version = client.version();
        const stats = client.stats();
        return { ok: true, detail: `KMIP server ${where} answers (protocol ${version ? versionText(version) : '?'}; ${stats.open} pooled connection(s))` };
      } catch (err) {
        return { ok: false, detail: err instanceof Error ? err.message : String(err) };
      }
    },
    async close() {
      closed = true;
      client.close();
    },
  };
}
