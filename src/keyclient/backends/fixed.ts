import { timingSafeEqual } from 'node:crypto';
import { z } from 'zod';
import { defineBackend } from '../backend.js';
import { keyError } from '../errors.js';
import type { KeyManager, ListOptions, RequestContext } from '../key-manager.js';
import { symmetricKey, type ManagedObject } from '../objects/index.js';
import { resolveSecrets, secretFields } from '../options.js';
import { copySecret } from '../../util/secure-memory.js';

/** Nova's ConfKeyManager uses this id for its one key; volumes created under it carry it. */
export const FIXED_KEY_ID = '00000000-0000-0000-0000-000000000000';

const insecureHint =
  'the fixed backend gives every volume the same key from a config file; set allow_insecure: true to use it anyway (tests, or migrating off it with `portcullis key migrate`)';

const optionsSchema = resolveSecrets(
  z.strictObject({
    ...secretFields('key'),
    key_id: z.string().min(1).default(FIXED_KEY_ID),
    allow_insecure: z.boolean().default(false),
  }),
  ['key'],
).superRefine((opts, ctx) => {
  if (opts.allow_insecure !== true) ctx.addIssue({ code: 'custom', path: ['allow_insecure'], message: insecureHint });
  if (opts.key === undefined) {
    ctx.addIssue({ code: 'custom', path: ['key'], message: 'give the fixed key as hex in key, key_file or key_credential' });
  } else if (!/^([0-9a-fA-F]{2}){16,64}$/.test(opts.key)) {
    ctx.addIssue({ code: 'custom', path: ['key'], message: 'must be 32 to 128 hex digits (a 128- to 512-bit key)' });
  }
});

export type FixedOptions = z.output<typeof optionsSchema>;

/**
 * Nova's ConfKeyManager: one key from config for every volume. Insecure by
 * design (one leaked config file opens every volume), kept for tests and as
 * the starting point of a migration to a real key manager.
 */
export const fixedBackend = defineBackend({
  name: 'fixed',
  description: 'One key from config for every volume (Nova ConfKeyManager); insecure, tests and migration only',
  optionsSchema,
  async create(options, deps): Promise<KeyManager> {
    if (options.allow_insecure !== true) throw keyError('E_BACKEND_INSECURE', `Refusing to load: ${insecureHint}`);
    if (options.key === undefined) throw keyError('E_INVALID_ARGUMENT', 'The fixed backend has no key configured');
    const keyId = options.key_id;
    const master = copySecret(deps.allocator, Buffer.from(options.key, 'hex'));
    const bitLength = master.length * 8;
    let closed = false;

    const meta = { id: keyId, name: 'fixed-key', algorithm: 'aes', bitLength, created: new Date(0) };
    const ensureOpen = () => {
      if (closed) throw keyError('E_BACKEND_UNAVAILABLE', 'The fixed key manager was closed');
    };
    const notFound = (id: string) => keyError('E_KEY_NOT_FOUND', `Key ${id} not found (the fixed backend holds only ${keyId})`, { details: { id } });

    return {
      name: 'fixed',
      capabilities: { createKeyPair: false, storeAny: false, deletes: false, projectScoped: false },
      async createKey(_ctx: RequestContext, spec) {
        ensureOpen();
        if (spec.algorithm.toLowerCase() !== 'aes' || spec.length !== bitLength) {
          throw keyError(
            'E_INVALID_ARGUMENT',
            `The fixed backend can only "create" its own ${bitLength}-bit AES key, not ${spec.algorithm} ${spec.length}`,
            { details: { algorithm: spec.algorithm, length: spec.length } },
          );
        }
        return keyId;
      },
      async createKeyPair() {
        throw keyError('E_NOT_SUPPORTED', 'The fixed backend cannot create key pairs');
      },
      async store(_ctx, obj: ManagedObject) {
        ensureOpen();
        const bytes = obj.bytes();
        if (obj.type === 'symmetric' && bytes.length === master.length && timingSafeEqual(bytes, master.view())) return keyId;
        throw keyError('E_NOT_SUPPORTED', 'The fixed backend cannot store objects other than its own key');
      },
      async get(_ctx, id, getOptions) {
        ensureOpen();
        if (id !== keyId) throw notFound(id);
        return symmetricKey(meta, getOptions?.metadataOnly === true ? undefined : copySecret(deps.allocator, master.view()));
      },
      async delete(_ctx, id) {
        ensureOpen();
        // Nova's ConfKeyManager refuses to delete its key too: every volume depends on it.
        if (id !== keyId) throw notFound(id);
      },
      async list(_ctx, listOptions: ListOptions = {}) {
        ensureOpen();
        if (listOptions.type !== undefined && listOptions.type !== 'symmetric') return [];
        if (listOptions.name !== undefined && listOptions.name !== meta.name) return [];
        return [symmetricKey(meta, undefined)];
      },
      async health() {
        return { ok: !closed, insecure: true, detail: 'fixed key: every volume shares one key from config (insecure)' };
      },
      async close() {
        closed = true;
        master.wipe();
      },
    };
  },
});
