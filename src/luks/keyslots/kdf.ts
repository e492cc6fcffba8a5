import type { KeyslotKdf, LuksDump, Pbkdf } from '../options.js';

/** Enabled keyslots and their PBKDF, from either header version. */
export function keyslotKdfs(dump: LuksDump): KeyslotKdf[] {
  if (dump.version === 1) return dump.keyslots;
  const keyslots = (dump.metadata['keyslots'] ?? {}) as Record<string, { kdf?: { type?: string; iterations?: number; time?: number; memory?: number } }>;
  return Object.entries(keyslots)
    .map(([slot, k]) => {
      const kdf = k.kdf ?? {};
      const base = { slot: Number(slot), type: kdf.type ?? 'unknown', iterations: kdf.iterations ?? kdf.time ?? 0 };
      return kdf.memory === undefined ? base : { ...base, memoryKiB: kdf.memory };
    })
    .sort((a, b) => a.slot - b.slot);
}

/** Whether a slot is at least as cheap to open as `pbkdf` asks. */
export function satisfies(slot: KeyslotKdf, pbkdf: Pbkdf): boolean {
  if (slot.type !== pbkdf.type) return false;
  if (pbkdf.iterations !== undefined && slot.iterations > pbkdf.iterations) return false;
  return pbkdf.memoryKiB === undefined || (slot.memoryKiB ?? 0) <= pbkdf.memoryKiB;
}

export function describeKdf(k: { type: string; iterations?: number | undefined; memoryKiB?: number | undefined }): string {
  if (k.type === 'pbkdf2') return `pbkdf2 ${k.iterations === undefined ? '' : `${k.iterations} iterations`}`.trim();
  return [k.type, k.iterations === undefined ? '' : `t=${k.iterations}`, k.memoryKiB === undefined ? '' : `m=${k.memoryKiB}`].filter((p) => p !== '').join(' ');
}
