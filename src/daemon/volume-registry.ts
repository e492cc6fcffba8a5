import { readPrivateFile, writePrivateFile } from '../util/private-file.js';
import { z } from 'zod';
import type { Logger } from './log.js';
import type { SlotKey } from '../luks/driver.js';

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
  /** The LUKS UUID the disk got when portcullis formatted it: what proves the disk before an erase (a node and a minor are reused). */
  luksUuid?: string;
  /** Which key opens each keyslot (slot number → key id, backend, project): the LUKS2 token's facts, kept here for LUKS1 too. */
  keyslots?: Record<string, SlotKey>;
}

/**
 * What the daemon knows of each mapping beyond what the kernel says: the
 * project and key it was attached with. Kept in a small JSON file (0600,
 * runtime.volumes_file; under the shipped unit in the state directory
 * /var/lib/portcullis), written crash-safely, so a restarted daemon still
 * knows who owns what. The kernel stays the truth: a saved volume's entry
 * counts only for a mapping that exists, in the same boot, on the same
 * device. An ephemeral disk's entry outlives its mapping and a reboot (its
 * erase needs it); after a reboot its major:minor means nothing and only
 * the disk's LUKS UUID and header token prove it.
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
  version: z.union([z.literal(1), z.literal(2)]),
  /** The kernel's boot the records were written in (version 2); a mapping never outlives a boot. */
  boot_id: z.string().nullable().optional(),
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
      luksUuid: z.string().max(64).optional(),
      keyslots: z.record(z.string().regex(/^\d{1,2}$/), z.object({ key_id: z.string(), backend: z.string(), project_id: z.string() })).optional(),
    }),
  ),
});

type SavedRecord = z.infer<typeof fileSchema>['volumes'][string];

export interface RegistryOptions {
  /** This boot's id (/proc/sys/kernel/random/boot_id); undefined when unknown, and then saved records count as this boot's. */
  bootId?: string | undefined;
}

export function volumeRegistry(file: string | undefined, log: Logger, options: RegistryOptions = {}): VolumeRegistry {
  const records = new Map<string, VolumeRecord>();
  const loaded = file === undefined ? undefined : load(file, log);
  const sameBoot = loaded?.bootId == null || options.bootId === undefined || loaded.bootId === options.bootId;
  // A Map: names come from the kernel and the file, never looked up through a prototype.
  const saved = new Map<string, SavedRecord>(sameBoot ? Object.entries(loaded?.volumes ?? {}) : []);
  // An ephemeral disk's record outlives its mapping: taken as detached until adopt() finds the mapping live.
  // After a reboot its major:minor names nothing (only its LUKS UUID and header token prove the disk).
  for (const [name, s] of Object.entries(loaded?.volumes ?? {})) {
    if (s.keyScope === undefined || s.device === null) continue;
    const { rdev: _rdev, ...rest } = s;
    const kept = sameBoot ? s : rest;
    records.set(name, { origin: 'adopted', device: s.device, projectId: s.projectId, keyId: s.keyId, ...optional(kept), detached: true });
  }
  if (!sameBoot && loaded !== undefined) log.info('volume records from an earlier boot: volumes dropped (their mappings ended with it), ephemeral disks kept for their erase', { file, ephemeral: records.size });

  function persist(): void {
    if (file === undefined) return;
    const volumes: Record<string, SavedRecord> = {};
    for (const [name, r] of records) {
      volumes[name] = { device: r.device ?? null, projectId: r.projectId, keyId: r.keyId, ...optional(r) };
    }
    try {
      // Write, fsync, rename, fsync the directory: a crash or power cut leaves the old file or the new, never half of one.
      writePrivateFile(file, `${JSON.stringify({ version: 2, boot_id: options.bootId ?? null, volumes })}\n`);
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
      const s = saved.get(name);
      if (s === undefined || s.detached === true || device === undefined) return undefined;
      const same = s.rdev === undefined ? s.device === device : (await rdevOf(device)) === s.rdev;
      return same ? { origin: 'adopted', device, projectId: s.projectId, keyId: s.keyId, ...optional(s) } : undefined;
    },
  };
}

/** The optional fields, present only when set (the file stays small, old files stay valid). */
function optional(r: { rdev?: string | undefined; keyScope?: 'instance' | 'project' | undefined; keyCreated?: boolean | undefined; detached?: boolean | undefined; luksUuid?: string | undefined; keyslots?: Record<string, SlotKey> | undefined }): Pick<VolumeRecord, 'rdev' | 'keyScope' | 'keyCreated' | 'detached' | 'luksUuid' | 'keyslots'> {
  return {
    ...(r.keyslots === undefined ? {} : { keyslots: r.keyslots }),
    ...(r.luksUuid === undefined ? {} : { luksUuid: r.luksUuid }),
    ...(r.rdev === undefined ? {} : { rdev: r.rdev }),
    ...(r.keyScope === undefined ? {} : { keyScope: r.keyScope }),
    ...(r.keyCreated === undefined ? {} : { keyCreated: r.keyCreated }),
    ...(r.detached === undefined ? {} : { detached: r.detached }),
  };
}

function load(file: string, log: Logger): { bootId: string | null | undefined; volumes: Record<string, SavedRecord> } | undefined {
  let text: string;
  try {
    // Its records decide ownership: a file someone else could have written is not believed.
    text = readPrivateFile(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined; // first start
    log.warn('ignoring an unreadable volume registry; mappings it named are foreign until attached again', { file, error: err instanceof Error ? err.message : String(err) });
    return undefined;
  }
  try {
    const parsed = fileSchema.parse(JSON.parse(text));
    return { bootId: parsed.boot_id, volumes: parsed.volumes };
  } catch (err) {
    log.warn('ignoring an unreadable volume registry; mappings it named are foreign until attached again', { file, error: err instanceof Error ? err.message : String(err) });
    return undefined;
  }
}
