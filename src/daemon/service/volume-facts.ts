import { tokenKeyIds, type LuksHeader, type SlotKey, type VolumeToken } from '../../luks/driver.js';
import type { KeyslotFact } from '../../api/wire.js';
import { daemonError } from '../errors.js';
import type { VolumeRecord } from '../volume-registry.js';

/**
 * What a volume says about its own keys: the LUKS2 `portcullis` token
 * (header/volume-token.ts) and, for LUKS1 which has no tokens, the daemon's
 * record. Used to refuse an attach or a rekey naming a key the volume does
 * not list, and to show the facts in GET /v1/volumes/{name}.
 */

/**
 * @throws E_VOLUME_KEY_MISMATCH when the token names none of `keyIds`
 */
export function assertTokenNames(name: string, token: VolumeToken, keyIds: string[]): void {
  const named = tokenKeyIds(token);
  if (keyIds.some((id) => named.includes(id))) return;
  throw daemonError('E_VOLUME_KEY_MISMATCH', `The LUKS2 header of ${name} says it opens with key ${named.join(', ')}, not ${keyIds.join(' or ')}; refusing before trying any key (was the volume rekeyed? use the key it names)`, {
    details: { name, key_ids: keyIds, token_key_ids: named },
  });
}

/**
 * The keyslot map after a step of a rekey: `slot` names `facts`, `retired`
 * (the old key's slot, about to go) and slots no longer active are dropped,
 * other slots' entries are kept. Keys sorted, so equal maps stringify alike.
 */
export function slotFacts(slots: Record<string, SlotKey> | undefined, active: number[], retired: number | undefined, slot: number, facts: SlotKey): Record<string, SlotKey> {
  const entries = Object.entries(slots ?? {}).filter(([s]) => active.includes(Number(s)) && Number(s) !== retired && Number(s) !== slot);
  entries.push([String(slot), facts]);
  return Object.fromEntries(entries.sort(([a], [b]) => Number(a) - Number(b)));
}

/** The facts to show: the token's where the header has one, else the record's (LUKS1, or a volume os-brick formatted). */
export function keyslotFactsOf(header: LuksHeader | undefined, record: VolumeRecord | undefined, backend: string): { keyslots: KeyslotFact[] | null; keyslots_from: 'token' | 'record' | null } {
  const list = (slots: Record<string, SlotKey>): KeyslotFact[] => Object.entries(slots).map(([slot, s]) => ({ slot: Number(slot), ...s }));
  if (header?.volumeToken !== undefined) return { keyslots: list(header.volumeToken.slots), keyslots_from: 'token' };
  if (record?.keyslots !== undefined) return { keyslots: list(record.keyslots), keyslots_from: 'record' };
  if (record?.keyId != null && record.projectId !== null) return { keyslots: [{ slot: null, key_id: record.keyId, backend, project_id: record.projectId }], keyslots_from: 'record' };
  return { keyslots: null, keyslots_from: null };
}
