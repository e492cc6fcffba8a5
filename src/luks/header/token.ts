import { z } from 'zod';

/**
 * The portcullis token in a LUKS2 header: which disk this is, for which
 * project, and which key opens it. No secret is in it. It makes an
 * ephemeral disk self-describing, so that what proves a disk before an erase
 * outlives the daemon's records (a lost file, a reboot) and a device node
 * reused by another tenant's disk (another UUID, another token) is never
 * taken for it. Written once, at format, by `cryptsetup token import`;
 * read in-process with the rest of the header.
 */
export const DISK_TOKEN_TYPE = 'portcullis-disk';

const tokenSchema = z.object({
  type: z.literal(DISK_TOKEN_TYPE),
  /** The token's format; a later format gets a new number. */
  version: z.literal(1),
  /** The mapping name the disk was made for (ephemeral: from instance and disk). */
  name: z.string().min(1).max(127),
  project_id: z.string().min(1).max(255),
  key_id: z.string().min(1).max(512),
  /** A fact of the key's creation that never changes: instance (one disk's key) or project (shared). */
  key_scope: z.enum(['instance', 'project']),
  /** portcullis created the key for this one disk: only then may an erase delete it. */
  key_created: z.boolean(),
});

export type DiskToken = Omit<z.infer<typeof tokenSchema>, 'type' | 'version'>;

/** The JSON `cryptsetup token import` takes: a token bound to no keyslot (it unlocks nothing). */
export function diskTokenJson(token: DiskToken): string {
  return JSON.stringify({ type: DISK_TOKEN_TYPE, keyslots: [], version: 1, ...token });
}

/**
 * The portcullis token among a LUKS2 header's tokens, if exactly one is
 * there and it is well-formed. Several, or a malformed one, is no proof.
 */
export function findDiskToken(metadata: Record<string, unknown>): DiskToken | undefined {
  const tokens = metadata['tokens'];
  if (typeof tokens !== 'object' || tokens === null) return undefined;
  const ours = Object.values(tokens).filter((t): t is Record<string, unknown> => typeof t === 'object' && t !== null && (t as Record<string, unknown>)['type'] === DISK_TOKEN_TYPE);
  if (ours.length !== 1) return undefined;
  const parsed = tokenSchema.safeParse(ours[0]);
  if (!parsed.success) return undefined;
  const { type: _type, version: _version, ...token } = parsed.data;
  return token;
}
