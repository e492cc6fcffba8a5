/**
 * The key cache's entries: the one copy of each key it holds, in LRU order,
 * and the "no"s it remembers. Wiping an entry waits for the views it has
 * lent to come back, so a callback using the key never sees it vanish.
 */
import type { CacheOptions, CacheStats } from './cache-options.js';
import { KeyClientError } from './errors.js';
import { metadataOf, objectOfType, type ManagedObject, type ObjectMetadata, type ObjectType } from './objects/index.js';
import { copySecret, type SecretBuffer, type SecureAllocator } from '../util/secure-memory.js';

export interface Entry {
  readonly key: string;
  /** Normalised id, for evict(). */
  readonly id: string;
  readonly type: ObjectType;
  readonly meta: ObjectMetadata;
  readonly secret: SecretBuffer;
  readonly expiresAt: number;
  /** Views lent and not yet given back. */
  lent: number;
  /** Out of the cache; wiped when the last lent view comes back. */
  dropped: boolean;
}

export interface Negative {
  readonly id: string;
  readonly error: unknown;
  readonly expiresAt: number;
}

export type Counter = Exclude<keyof CacheStats, 'entries' | 'backendLatency'>;

export type EntryStore = ReturnType<typeof entryStore>;

export function entryStore(options: CacheOptions, allocator: SecureAllocator, counters: Record<Counter, number>) {
  const entries = new Map<string, Entry>(); // iteration order is LRU order, least recent first
  const negatives = new Map<string, Negative>();
  const negativeMs = options.negative_ttl_seconds * 1000;
  const staleMs = options.stale_if_error_seconds * 1000;
  /**
   * The entry set into `entries` last, so the last in LRU order: every set goes
   * through insert() or touch(), which update it, and an entry dropped since
   * is no longer what entries.get() returns. A hit on it skips the delete and
   * set that would move it where it already is: bench/key-cache.ts's profile
   * had answer() at about a tenth of a cached get()'s self time, and skipping
   * the move made a hot key's get() about a fifth cheaper in CPU time (the
   * map's deleted slots and their compaction included).
   */
  let newest: Entry | undefined;

  /** Wipes an entry that is not (or no longer) in the map, once its lent views are back. */
  function discard(entry: Entry): void {
    entry.dropped = true;
    if (entry.lent === 0) entry.secret.wipe();
  }

  function drop(entry: Entry): void {
    entries.delete(entry.key);
    discard(entry);
  }

  function expire(entry: Entry): void {
    drop(entry);
    counters.expirations += 1;
  }

  function remember(key: string, id: string, error: unknown, t: number): void {
    if (negativeMs <= 0) return;
    negatives.delete(key);
    negatives.set(key, { id, error, expiresAt: t + negativeMs });
    for (const oldest of negatives.keys()) {
      if (negatives.size <= options.max_entries) break;
      negatives.delete(oldest);
    }
  }

  function giveBack(entry: Entry): void {
    entry.lent -= 1;
    if (entry.dropped && entry.lent === 0) entry.secret.wipe();
  }

  return {
    entries,
    drop,
    discard,
    expire,

    /** Takes the backend's object; its bytes are copied once into `allocator` memory and the object zeroized. */
    adopt(key: string, id: string, obj: ManagedObject, expiresAt: number): Entry {
      try {
        const secret = copySecret(allocator, obj.bytes());
        return { key, id, type: obj.type, meta: metadataOf(obj), secret, expiresAt, lent: 0, dropped: false };
      } finally {
        obj.zeroize(); // the backend's copy is ours to dispose of: the cache holds exactly one
      }
    },

    insert(entry: Entry): void {
      const old = entries.get(entry.key);
      if (old !== undefined) expire(old); // only an expired entry can be there while a fetch ran
      entries.set(entry.key, entry);
      newest = entry;
      for (const oldest of entries.values()) {
        if (entries.size <= options.max_entries) break;
        drop(oldest);
        counters.evictions += 1;
      }
    },

    /** Makes `entry`, which is in the map, the most recently used. */
    touch(entry: Entry): void {
      if (entry === newest) return;
      entries.delete(entry.key);
      entries.set(entry.key, entry);
      newest = entry;
    },

    /** A fresh copy the caller owns and zeroizes; metadata alone when asked. */
    copyOut(entry: Entry, metadataOnly: boolean): ManagedObject {
      return objectOfType(entry.type, entry.meta, metadataOnly ? undefined : copySecret(allocator, entry.secret.view()));
    },

    /** The entry's own bytes, no copy; zeroize() gives the view back (and makes it unusable). */
    lendOut(entry: Entry): ManagedObject {
      const view = entry.secret.lend(() => giveBack(entry));
      entry.lent += 1;
      return objectOfType(entry.type, entry.meta, view);
    },

    /**
     * After a "no" from the backend: forget the key, remember the no. A no to
     * an alias (a href naming the UUID) is remembered for that alias only: it
     * says nothing of the key itself, whose entry stays.
     */
    refused(key: string, askKey: string, id: string, err: unknown, t: number): void {
      const old = entries.get(key);
      if (isDenial(err)) {
        // The backend said no: a stale key must never outlive that.
        if (old !== undefined && askKey === key) drop(old);
        remember(askKey, id, err, t);
      } else if (old !== undefined && t >= old.expiresAt + staleMs) {
        expire(old);
      }
    },

    /** The expired entry that may answer instead of `err`: only while the backend is unreachable, never after a "no". */
    staleFor(key: string, transient: boolean, t: number): Entry | undefined {
      const entry = entries.get(key);
      return entry !== undefined && t < entry.expiresAt + staleMs && transient ? entry : undefined;
    },

    remember,

    /** A remembered "no" for `askKey`, forgotten once expired. */
    denial(askKey: string, t: number): Negative | undefined {
      const negative = negatives.get(askKey);
      if (negative === undefined) return undefined;
      if (t < negative.expiresAt) return negative;
      negatives.delete(askKey);
      return undefined;
    },

    /** Wipes the entries and denials of `id` in every project; returns how many keys. */
    evict(normId: string): number {
      let count = 0;
      for (const entry of entries.values()) {
        if (entry.id !== normId) continue;
        drop(entry);
        count += 1;
      }
      for (const [key, negative] of negatives) if (negative.id === normId) negatives.delete(key);
      return count;
    },

    flush(): number {
      const count = entries.size;
      for (const entry of entries.values()) drop(entry);
      negatives.clear();
      return count;
    },

    sweep(t: number): number {
      let count = 0;
      for (const entry of entries.values()) {
        if (t < entry.expiresAt + staleMs) continue;
        expire(entry);
        count += 1;
      }
      for (const [key, negative] of negatives) if (t >= negative.expiresAt) negatives.delete(key);
      return count;
    },
  };
}

/**
 * Barbican names a secret both by bare UUID and by href (".../v1/secrets/UUID"),
 * and callers use both; sharing one entry avoids fetching and holding the key
 * twice. A miss still hands the backend the id as given, so it validates it.
 */
export function normaliseId(id: string): string {
  // Only a real secret href is an alias: "x/UUID" or ".../orders/UUID" name something else, or nothing.
  if (!id.startsWith('http')) return id; // most ids are bare UUIDs: skip the regex on every hit
  const href = /^https?:\/\/[^/?#\s]+(?:\/[^?#\s]*)?\/v1\/secrets\/([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})\/?$/.exec(id);
  return href?.[1] ?? id;
}

/**
 * (backend, project, who, key id). `who` is empty for the service's own
 * identity, else the caller's principal or token digest: Barbican ACLs can
 * grant a secret to some users of a project and not others, so one caller's
 * fetch must not answer another principal's request.
 */
export function cacheKey(backend: string, projectId: string, who: string, id: string): string {
  // Each part length-prefixed, so no choice of ids can make two tuples one string; a tenth of the
  // cost of a cached get() when it was JSON.stringify of an array.
  return `${backend.length}:${backend}${projectId.length}:${projectId}${who.length}:${who}${id.length}:${id}`;
}

function isDenial(err: unknown): boolean {
  return err instanceof KeyClientError && (err.code === 'E_KEY_NOT_FOUND' || err.code === 'E_KEY_FORBIDDEN');
}
