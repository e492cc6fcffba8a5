import { z } from 'zod';
import { DEVICE_PATH_PATTERN, MAPPING_NAME_PATTERN } from '../luks/names.js';

/**
 * Socket API v1 on the wire (docs/api.md): request bodies as
 * schemas, answers as types. The CLI's client and the daemon share this file,
 * so the two cannot drift apart.
 */

/** Mapping names and ephemeral ids: what dm and cryptsetup accept, and nothing a shell or a path could misread. */
export const NAME_PATTERN = MAPPING_NAME_PATTERN;
export const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

const devicePath = z
  .string()
  .max(4096)
  .regex(DEVICE_PATH_PATTERN, 'must be a /dev path')
  .refine((p) => !p.split('/').includes('..'), 'must not contain ".."');

const keyRef = z.strictObject({
  /** A secret UUID or a Barbican href. */
  id: z.string().min(1).max(512),
  /** Must name the configured backend when given (os-brick metadata may carry it). */
  backend: z.string().min(1).max(64).optional(),
});

const auth = z.strictObject({
  /** A Keystone token to fetch the key with (token pass-through). Never logged. */
  token: z.string().min(1).max(16384).optional(),
});

const projectId = z.string().min(1).max(255).regex(/^[^\s/]+$/, 'must not contain spaces or "/"');

const common = {
  project_id: projectId,
  auth: auth.optional(),
  /** luks, luks2, plain, nop or an os-brick encryptor class name. */
  provider: z.string().min(1).max(128).default('luks'),
  /** cryptsetup --cipher; used when formatting (luks) or mapping (plain). */
  cipher: z
    .string()
    .regex(/^[a-z0-9]+(-[a-z0-9:]+){0,3}$/, 'must look like aes-xts-plain64')
    .optional(),
  /** Bits, as cryptsetup --key-size. */
  key_size: z.number().int().min(128).max(1024).multipleOf(8).optional(),
  read_only: z.boolean().default(false),
  allow_discards: z.boolean().default(false),
};

export const attachBodySchema = z.strictObject({
  device: devicePath,
  key: keyRef,
  ...common,
  /** "never": open only; "if-blank": format first when the device is provably blank (never otherwise). */
  format: z.enum(['never', 'if-blank']).default('never'),
  /** os-brick style: after opening, point the `device` symlink at the mapping. */
  symlink: z.boolean().default(false),
});
export type AttachBody = z.output<typeof attachBodySchema>;

export const ephemeralAttachBodySchema = z.strictObject({
  device: devicePath,
  /** instance: a key per disk, created on first attach; project: one key per project, shared. */
  key_scope: z.enum(['instance', 'project']).default('instance'),
  /** An existing key to use instead of finding or creating one. */
  key: keyRef.optional(),
  ...common,
  provider: z.string().min(1).max(128).default('luks2'),
});
export type EphemeralAttachBody = z.output<typeof ephemeralAttachBodySchema>;

export const resizeBodySchema = z.strictObject({
  key: keyRef,
  project_id: projectId,
  auth: auth.optional(),
});
export type ResizeBody = z.output<typeof resizeBodySchema>;

/** POST /v1/volumes/{name}/rekey: replace the keyslot of `key` by one for `new_key`; `device` for a detached volume. */
export const rekeyBodySchema = z.strictObject({
  project_id: projectId,
  key: keyRef,
  new_key: keyRef,
  device: devicePath.optional(),
  auth: auth.optional(),
});
export type RekeyBody = z.output<typeof rekeyBodySchema>;

/** DELETE /v1/ephemeral/...?erase=true needs to know whose key to delete. */
export const ephemeralDetachBodySchema = z.strictObject({
  project_id: projectId,
  /** The disk to erase when it is no longer mapped (after an earlier detach). */
  device: devicePath.optional(),
  key: keyRef.optional(),
  auth: auth.optional(),
});
export type EphemeralDetachBody = z.output<typeof ephemeralDetachBodySchema>;

/** coalesced: the key came from another request's backend fetch that was already in flight (single-flight). */
export type KeySource = 'cache' | 'coalesced' | 'backend' | 'created';

export interface AttachAnswer {
  name: string;
  mapper_path: string;
  device: string;
  provider: 'luks' | 'luks2' | 'plain' | 'nop';
  luks_uuid: string | null;
  size_bytes: number | null;
  key_id: string | null;
  key_source: KeySource | null;
  /** False when the mapping already existed (idempotent attach). */
  opened: boolean;
  formatted: boolean;
  /** True when this attach rewrote the key's slow keyslot to the fast PBKDF (luks.upgrade_keyslots). */
  keyslot_upgraded: boolean;
  timings_ms: { key: number; format: number; open: number; total: number };
  /** Ephemeral only. */
  key_scope?: 'instance' | 'project';
}

export interface DetachAnswer {
  name: string;
  /** False when there was nothing to close (idempotent detach). */
  closed: boolean;
  deferred: boolean;
  /** Erase: the data can never be decrypted again (keyslots wiped, or the disk's own key deleted). */
  erased?: boolean;
  /** Erase: the disk was found, proven by its LUKS UUID and token, and its keyslots wiped. */
  keyslots_wiped?: boolean;
  key_deleted?: boolean;
  timings_ms: { total: number };
}

/** One keyslot's key, as the volume's portcullis token (LUKS2) or the daemon's record says; `slot` null when the record predates keyslot facts. */
export interface KeyslotFact {
  slot: number | null;
  key_id: string;
  backend: string;
  project_id: string;
}

export interface RekeyAnswer {
  name: string;
  device: string;
  luks_version: 1 | 2;
  /** The mapping was open (online rekey); false: the device was named (offline). */
  online: boolean;
  /** False when the volume already opened with the new key only (a retry of a finished rekey). */
  changed: boolean;
  /** The keyslot the new key opens. */
  slot: number;
  /** The old key's keyslot, destroyed; null when none was (retry, or the two keys had one slot). */
  removed_slot: number | null;
  /** Where the facts now live: the LUKS2 token, the daemon's record, both, or neither (an offline LUKS1 volume). */
  recorded_in: Array<'token' | 'record'>;
  key_id: string;
  timings_ms: { keys: number; total: number };
}

export interface VolumeAnswer {
  name: string;
  mapper_path: string;
  device: string | null;
  type: string | null;
  cipher: string | null;
  key_size_bits: number | null;
  size_bytes: number | null;
  read_only: boolean;
  in_use: boolean;
  /** Attached through this daemon since it started, adopted at start from its saved record, or foreign (not portcullis'; admins only). */
  origin: 'attached' | 'adopted' | 'foreign';
  project_id: string | null;
  key_id: string | null;
  /** GET /v1/volumes/{name} only: which key opens each keyslot (no secret), from the LUKS2 token or, without one, the record. */
  keyslots?: KeyslotFact[] | null;
  keyslots_from?: 'token' | 'record' | null;
}

export interface HealthCheck {
  ok: boolean;
  detail: string;
}

export interface HealthAnswer {
  status: 'ok' | 'degraded' | 'failing';
  version: string;
  uptime_seconds: number;
  backend: string;
  volumes: number;
  checks: Record<string, HealthCheck>;
}

export interface CacheAnswer {
  hits: number;
  misses: number;
  coalesced: number;
  stale_served: number;
  negative_hits: number;
  evictions: number;
  expirations: number;
  entries: number;
  backend_fetches: number;
}

export interface ErrorAnswer {
  error: { code: string; message: string; details: Record<string, unknown> };
}
