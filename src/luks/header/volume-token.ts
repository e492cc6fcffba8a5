import { z } from 'zod';

/**
 * The `portcullis` token in a LUKS2 header: which key opens each keyslot,
 * from which key manager, for which project (systemd-cryptenroll and clevis
 * record how each slot is unlocked the same way). No secret is in it, and
 * nothing a key manager would not show that project. It makes a volume
 * self-describing: a detached disk says which key opens it, and an attach
 * naming another key is refused before any open is tried.
 *
 * It lives beside the ephemeral disks' `portcullis-disk` token (token.ts)
 * rather than replacing it: that one is written once at format and never
 * rewritten, because an erase trusts what it says about whether a key may
 * be deleted; this one is rewritten at every rekey. One mutable token per
 * volume and one write-once token per ephemeral disk keep the erase's
 * authority out of reach of a rotation. The token is bound to no keyslot
 * (`keyslots: []`): libcryptsetup never tries it as an unlock method.
 */
export const VOLUME_TOKEN_TYPE = 'portcullis';

const slotSchema = z.object({
  key_id: z.string().min(1).max(512),
  backend: z.string().min(1).max(64),
  project_id: z.string().min(1).max(255),
});

const tokenSchema = z.object({
  type: z.literal(VOLUME_TOKEN_TYPE),
  /** The token's format; a later format gets a new number. */
  version: z.literal(1),
  /** Keyslot number (as a decimal string, LUKS2's own spelling) → the key that opens it. */
  slots: z.record(z.string().regex(/^\d{1,2}$/), slotSchema),
});

/** One keyslot's key, as the token and the daemon's record name it. */
export type SlotKey = z.infer<typeof slotSchema>;

export interface VolumeToken {
  /** The LUKS2 token id it is stored under (rewritten in place by a rekey). */
  tokenId: number;
  /** Keyslot → its key. */
  slots: Record<string, SlotKey>;
}

/** The token object TOKEN_SET / `cryptsetup token import` takes. */
export function volumeTokenJson(slots: Record<string, SlotKey>): string {
  return JSON.stringify({ type: VOLUME_TOKEN_TYPE, keyslots: [], version: 1, slots });
}

/**
 * The portcullis volume token among a LUKS2 header's tokens, if exactly one
 * is there and it is well-formed. Several, or a malformed one, says nothing.
 */
export function findVolumeToken(metadata: Record<string, unknown>): VolumeToken | undefined {
  const tokens = metadata['tokens'];
  if (typeof tokens !== 'object' || tokens === null) return undefined;
  const ours = Object.entries(tokens).filter(([, t]) => typeof t === 'object' && t !== null && (t as Record<string, unknown>)['type'] === VOLUME_TOKEN_TYPE);
  if (ours.length !== 1 || ours[0] === undefined) return undefined;
  const [id, raw] = ours[0];
  const parsed = tokenSchema.safeParse(raw);
  if (!parsed.success || !/^\d+$/.test(id)) return undefined;
  return { tokenId: Number(id), slots: parsed.data.slots };
}

/** The key ids the token names, in slot order. */
export const tokenKeyIds = (token: VolumeToken): string[] =>
  Object.entries(token.slots)
    .sort(([a], [b]) => Number(a) - Number(b))
    .map(([, s]) => s.key_id);
