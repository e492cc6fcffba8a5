import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { z } from 'zod';
import type { Logger } from './log.js';
import type { VolumeRecord } from './service/context.js';

/**
 * What the daemon knows of each mapping beyond what the kernel says: the
 * project and key it was attached with. Kept in a small JSON file (0600)
 * beside the socket, on the runtime tmpfs, so a restarted daemon still knows
 * who owns what; a reboot clears the file as it clears the mappings. The
 * kernel stays the truth: a saved entry counts only for a mapping that exists
 * on the same device.
 */
export interface VolumeRegistry {
  get(name: string): VolumeRecord | undefined;
  has(name: string): boolean;
  set(name: string, record: VolumeRecord): void;
  delete(name: string): void;
  readonly size: number;
  /** At start: the saved record for a mapping the kernel has on `device`, if the file has one. */
  saved(name: string, device: string | undefined): VolumeRecord | undefined;
}

const fileSchema = z.object({
  version: z.literal(1),
  volumes: z.record(
    z.string(),
    z.object({
      device: z.string().nullable(),
      projectId: z.string().nullable(),
      keyId: z.string().nullable(),
      keyScope: z.enum(['instance', 'project']).optional(),
    }),
  ),
});

type Saved = z.infer<typeof fileSchema>['volumes'];

export function volumeRegistry(file: string | undefined, log: Logger): VolumeRegistry {
  const records = new Map<string, VolumeRecord>();
  const saved: Saved = file === undefined ? {} : load(file, log);

  function persist(): void {
    if (file === undefined) return;
    const volumes: Saved = {};
    for (const [name, r] of records) {
      volumes[name] = { device: r.device ?? null, projectId: r.projectId, keyId: r.keyId, ...(r.keyScope === undefined ? {} : { keyScope: r.keyScope }) };
    }
    try {
      // Write-then-rename: a crash mid-write leaves the old file, never half of one.
      writeFileSync(`${file}.tmp`, `${JSON.stringify({ version: 1, volumes })}\n`, { mode: 0o600 });
      renameSync(`${file}.tmp`, file);
    } catch (err) {
      log.warn('cannot save the volume registry; a restart will show these mappings without project and key', { file, error: err instanceof Error ? err.message : String(err) });
    }
  }

  return {
    get: (name) => records.get(name),
    has: (name) => records.has(name),
    set(name, record) {
      records.set(name, record);
      persist();
    },
    delete(name) {
      if (records.delete(name)) persist();
    },
    get size() {
      return records.size;
    },
    saved(name, device) {
      const s = saved[name];
      if (s === undefined || device === undefined || s.device !== device) return undefined;
      return { origin: 'adopted', device, projectId: s.projectId, keyId: s.keyId, ...(s.keyScope === undefined ? {} : { keyScope: s.keyScope }) };
    },
  };
}

function load(file: string, log: Logger): Saved {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return {}; // first start, or after a reboot
  }
  try {
    return fileSchema.parse(JSON.parse(text)).volumes;
  } catch (err) {
    log.warn('ignoring an unreadable volume registry; adopted mappings will show no project and key', { file, error: err instanceof Error ? err.message : String(err) });
    return {};
  }
}
