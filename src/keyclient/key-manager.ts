import type { ManagedObject, ObjectType } from './objects/index.js';

/**
 * Who is asking. Every call is scoped to one project (tenant); a backend must
 * never return another project's object to it.
 */
export interface RequestContext {
  projectId: string;
  /** A Keystone token to act with (token pass-through), instead of the service's own credentials. */
  token?: string;
  /**
   * The caller's deadline. Once it aborts, the call rejects with
   * E_BACKEND_UNAVAILABLE (details.deadline): the cache and the retry wrapper
   * stop waiting and retrying for any backend, and barbican tears down its
   * open exchange, so no request to Barbican outlives it. (kmip requests
   * still end at their own timeout; local ones are synchronous.) Never part
   * of a cache key.
   */
  signal?: AbortSignal | undefined;
}

export interface KeySpec {
  /** "aes" for symmetric keys; "rsa" (or "ec" where supported) for key pairs. */
  algorithm: string;
  /** Bits: 128/192/256/512 for AES (512 = AES-256-XTS), 2048+ for RSA. */
  length: number;
  name?: string;
}

export interface KeyPairIds {
  privateKeyId: string;
  publicKeyId: string;
}

export interface GetOptions {
  /** Fetch metadata only; the object's bytes() then throws E_METADATA_ONLY. */
  metadataOnly?: boolean;
}

export interface ListOptions {
  type?: ObjectType;
  /** Exact name match. */
  name?: string;
}

/** What a backend can do; the contract suite and callers read it instead of guessing. */
export interface Capabilities {
  createKeyPair: boolean;
  /** Whether store() accepts any object, or only what the backend already holds (fixed). */
  storeAny: boolean;
  /** Whether delete() really deletes. */
  deletes: boolean;
  /** Whether objects are scoped per project (false only for the fixed key). */
  projectScoped: boolean;
}

export interface BackendHealth {
  ok: boolean;
  /** Shown to operators; never contains secrets. */
  detail: string;
  insecure?: boolean;
}

/** Who uses a secret, as Barbican's secret consumers (API microversion 1.1) record it. */
export interface SecretConsumer {
  service: string;
  resourceType: string;
  resourceId: string;
}

/**
 * Optional capability: the key manager records who consumes a secret, so
 * that an operator sees what still depends on it before deleting it
 * (barbican only). Both calls are idempotent.
 */
export interface SecretConsumers {
  /**
   * Registers `consumer` on secret `id`; registering it again is no error.
   * @returns 'unsupported' when this key manager has no consumer API (nothing was sent but a version probe)
   * @throws E_KEY_NOT_FOUND, E_KEY_FORBIDDEN, E_BACKEND_UNAVAILABLE, ...
   */
  register(ctx: RequestContext, id: string, consumer: SecretConsumer): Promise<'registered' | 'unsupported'>;
  /**
   * Removes `consumer` from secret `id`. An absent consumer, or an absent
   * secret (which Barbican deletes with its consumers), is 'absent', no error.
   */
  remove(ctx: RequestContext, id: string, consumer: SecretConsumer): Promise<'removed' | 'absent' | 'unsupported'>;
}

/**
 * Optional capability: an admin claims for one project an object that
 * another client made and that no project can therefore see (kmip only).
 */
export interface KeyAdoption {
  /**
   * Makes object `id` the project's of `ctx`.
   * @returns 'adopted', or 'already' when it already was this project's (idempotent)
   * @throws E_KEY_OWNED_ELSEWHERE when it belongs to another project; E_KEY_NOT_FOUND when the server has no such object
   */
  adopt(ctx: RequestContext, id: string): Promise<'adopted' | 'already'>;
}

/**
 * The key manager contract, Castellan's KeyManager in TypeScript.
 *
 * Errors (see errors.ts): E_KEY_NOT_FOUND, E_KEY_FORBIDDEN,
 * E_BACKEND_UNAVAILABLE, E_BACKEND_AUTH, E_INVALID_ARGUMENT, E_NOT_SUPPORTED,
 * plus backend-specific integrity codes. Nothing else escapes: any other
 * failure is wrapped in one of these with the original as `cause`.
 *
 * Returned objects hold their bytes in the backend's SecureAllocator; the
 * caller owns them and should zeroize() when done. Objects passed to store()
 * stay the caller's: the backend copies what it keeps.
 */
export interface KeyManager {
  /** Registry name of the backend, or of the wrapper chain ("cache(barbican)"). */
  readonly name: string;
  readonly capabilities: Capabilities;
  /** @throws E_INVALID_ARGUMENT for unsupported algorithm/length. */
  createKey(ctx: RequestContext, spec: KeySpec): Promise<string>;
  /** @throws E_NOT_SUPPORTED where the backend has no key pairs. */
  createKeyPair(ctx: RequestContext, spec: KeySpec): Promise<KeyPairIds>;
  /** Stores a copy of `obj`; returns the new id. */
  store(ctx: RequestContext, obj: ManagedObject): Promise<string>;
  /** @throws E_KEY_NOT_FOUND, E_KEY_FORBIDDEN */
  get(ctx: RequestContext, id: string, options?: GetOptions): Promise<ManagedObject>;
  /** @throws E_KEY_NOT_FOUND, E_KEY_FORBIDDEN */
  delete(ctx: RequestContext, id: string): Promise<void>;
  /** Metadata-only objects of this project. */
  list(ctx: RequestContext, options?: ListOptions): Promise<ManagedObject[]>;
  health(): Promise<BackendHealth>;
  /** Present only where the backend records secret consumers (barbican); wrappers pass it through. */
  readonly consumers?: SecretConsumers;
  /** Present only where objects made elsewhere can be adopted (kmip); wrappers pass it through. */
  readonly adoption?: KeyAdoption;
  /** Releases connections and wipes held secrets; safe to call twice. */
  close(): Promise<void>;
}
