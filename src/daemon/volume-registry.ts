import { readPrivateFile, writePrivateFile } from './private-file.js';
import { z } from 'zod';
import type { Logger } from './log.js';

/** What the daemon knows of one mapping it made (or adopted with its saved record). */
export interface VolumeRecord {
  origin: 'attached' | 'adopted';
  /** The backing device as the kernel names it; how a saved record is matched to a mapping after a restart. */
  device?: string | undefined;
  /** The device's major:minor when it was attached: what identifies it (a path can name another device later). */
  rdev?: string | undefined;
  projectId: string | null;
  keyId: string | null;
  keyScope?: 'instance' | 'project';
  /** Ephemeral: portcullis created the key for this disk (instance scope), so an erase may delete it. */
  keyCreated?: boolean;
  /** Ephemeral: detached but not erased; kept so that a later erase knows the disk and its key. */
  detached?: boolean;
}

/**
 * What the daemon knows of each mapping beyond what the kernel says: the
 * project and key it was attached with. Kept in a small JSON file (0600)
 * beside the socket, on the runtime tmpfs, so a restarted daemon still knows
 * who owns what; a reboot clears the file as it clears the mappings. The
 * kernel stays the truth: a saved entry counts only for a mapping that exists
 * on the same device, except a detached ephemeral disk's, which an erase needs.
 */
export interface VolumeRegistry {
  get(name: string): VolumeRecord | undefined;
  has(name: string): boolean;
  /** Every recorded name, detached ephemeral disks included. */
  names(): string[];
  set(name: string, record: VolumeRecord): void;
  delete(name: string): void;
  /** Records of mappings (detached ephemeral disks not counted). */
  readonly size: number;
  /**
   * At start: the saved record for a mapping the kernel has on `device`, if the file has one.
   * `rdevOf` gives the live device's major:minor, compared with a saved one (paths only where none was saved).
   */
  saved(name: string, device: string | undefined, rdevOf: (path: string) => Promise<string | undefined>): Promise<VolumeRecord | undefined>;
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
      rdev: z.string().regex(/^\d+:\d+$/).optional(),
      keyCreated: z.boolean().optional(),
      detached: z.boolean().optional(),
    }),
  ),
});

type Saved = z.infer<typeof fileSchema>['volumes'];

export function volumeRegistry(file: string | undefined, log: Logger): VolumeRegistry {
  const records = new Map<string, VolumeRecord>();
  const saved: Saved = file === undefined ? {} : load(file, log);
  // A detached ephemeral disk has no mapping to be matched against: its record is taken as saved.
  for (const [name, s] of Object.entries(saved)) {
    if (s.detached === true && s.device !== null) records.set(name, { origin: 'adopted', device: s.device, projectId: s.projectId, keyId: s.keyId, ...optional(s) });
  }

  function persist(): void {
    if (file === undefined) return;
    const volumes: Saved = {};
    for (const [name, r] of records) {
      volumes[name] = { device: r.device ?? null, projectId: r.projectId, keyId: r.keyId, ...optional(r) };
    }
    try {
      // Write-then-rename: a crash mid-write leaves the old file, never half of one.
      writePrivateFile(file, `${JSON.stringify({ version: 1, volumes })}\n`);
    } catch (err) {
      log.warn('cannot save the volume registry; a restart will show these mappings without project and key', { file, error: err instanceof Error ? err.message : String(err) });
    }
  }

  return {
    get: (name) => records.get(name),
    has: (name) => records.has(name),
    names: () => [...records.keys()],
    set(name, record) {
      records.set(name, record);
      persist();
    },
    delete(name) {
      if (records.delete(name)) persist();
    },
    get size() {
      let n = 0;
      for (const r of records.values()) if (r.detached !== true) n += 1;
      return n;
    },
    async saved(name, device, rdevOf) {
      const s = saved[name];
      if (s === undefined || s.detached === true || device === undefined) return undefined;
      const same = s.rdev === undefined ? s.device === device : (await rdevOf(device)) === s.rdev;
      return same ? { origin: 'adopted', device, projectId: s.projectId, keyId: s.keyId, ...optional(s) } : undefined;
    },
  };
}

/** The optional fields, present only when set (the file stays small, old files stay valid). */
function optional(r: { rdev?: string | undefined; keyScope?: 'instance' | 'project' | undefined; keyCreated?: boolean | undefined; detached?: boolean | undefined }): Pick<VolumeRecord, 'rdev' | 'keyScope' | 'keyCreated' | 'detached'> {
  return {
    ...(r.rdev === undefined ? {} : { rdev: r.rdev }),
    ...(r.keyScope === undefined ? {} : { keyScope: r.keyScope }),
    ...(r.keyCreated === undefined ? {} : { keyCreated: r.keyCreated }),
    ...(r.detached === undefined ? {} : { detached: r.detached }),
  };
}

function load(file: string, log: Logger): Saved {
  let text: string;
  try {
    // Its records decide ownership: a file someone else could have written is not believed.
    text = readPrivateFile(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {}; // first start, or after a reboot
    log.warn('ignoring an unreadable volume registry; mappings it named are foreign until attached again', { file, error: err instanceof Error ? err.message : String(err) });
    return {};
  }
  try {
    return fileSchema.parse(JSON.parse(text)).volumes;
  } catch (err) {
    log.warn('ignoring an unreadable volume registry; mappings it named are foreign until attached again', { file, error: err instanceof Error ? err.message : String(err) });
    return {};
  }
}
