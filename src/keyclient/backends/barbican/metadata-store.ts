import { readPrivateFile, writePrivateFile } from '../../../util/private-file.js';
import { objectTypes, type ObjectType } from '../../objects/index.js';

/**
 * What Barbican said about a secret that its payload fetch needs, kept across
 * restarts so that a restarted daemon asks only for the payload: one request
 * per key instead of two. A secret's type, algorithm and bit length never
 * change and are not secret; its name is not needed and is not kept, and key
 * bytes never come here. Barbican still authorizes every payload request, so
 * knowing the metadata grants nothing.
 */

export interface StoredMetadata {
  type: ObjectType;
  algorithm?: string;
  bitLength?: number;
}

export interface MetadataStore {
  get(endpoint: string, projectId: string, uuid: string): StoredMetadata | undefined;
  record(endpoint: string, projectId: string, uuid: string, metadata: StoredMetadata): void;
  drop(endpoint: string, projectId: string, uuid: string): void;
  /** Writes what changed; safe to call twice. */
  close(): void;
}

export interface MetadataStoreOptions {
  /** @default 100000: the oldest-used entries are dropped beyond it */
  maxEntries?: number;
  /** Told about a file it cannot read or write; the store then works from memory. */
  warn?: (message: string) => void;
  /** @default 200: changes are written together, this long after the first */
  flushDelayMs?: number;
}

export const defaultMaxEntries = 100_000;
const fileVersion = 1;
const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const projectPattern = /^[\x21-\x7e]{1,4096}$/;

/** One line of the file: [endpoint, project, secret uuid, secret type, algorithm | null, bit length | null]. */
type Row = [string, string, string, ObjectType, string | null, number | null];

interface Shared {
  entries: Map<string, Row>;
  users: number;
  dirty: boolean;
  timer: NodeJS.Timeout | undefined;
  flush(): void;
}

/**
 * One store per file per process: a config reload opens a second backend
 * while the first finishes its requests, and two writers of one file would
 * each overwrite what the other learned.
 */
const open = new Map<string, Shared>();

const keyOf = (endpoint: string, projectId: string, uuid: string) => `${endpoint}\n${projectId}\n${uuid}`;

/**
 * Opens (or shares) the store kept in `path`, a 0600 JSON file written
 * crash-safely. A missing file is an empty store; an unreadable or corrupt
 * one is too, with a warning: the store only saves requests.
 */
export function openMetadataStore(path: string, options: MetadataStoreOptions = {}): MetadataStore {
  const maxEntries = options.maxEntries ?? defaultMaxEntries;
  const warn = options.warn ?? (() => undefined);
  const flushDelayMs = options.flushDelayMs ?? 200;
  let shared = open.get(path);
  if (shared === undefined) {
    const state: Shared = {
      entries: load(path, maxEntries, warn),
      users: 0,
      dirty: false,
      timer: undefined,
      flush() {
        if (state.timer !== undefined) clearTimeout(state.timer);
        state.timer = undefined;
        if (!state.dirty) return;
        state.dirty = false;
        try {
          writePrivateFile(path, JSON.stringify({ version: fileVersion, entries: [...state.entries.values()] }));
        } catch (err) {
          warn(`cannot write Barbican's secret metadata to ${path} (${err instanceof Error ? err.message : String(err)}), ignoring: a restart will ask Barbican for it again`);
        }
      },
    };
    shared = state;
    open.set(path, shared);
  }
  const s = shared;
  s.users += 1;
  const changed = () => {
    s.dirty = true;
    if (s.timer === undefined) {
      s.timer = setTimeout(() => s.flush(), flushDelayMs);
      s.timer.unref();
    }
  };
  let closed = false;
  return {
    get(endpoint, projectId, uuid) {
      const key = keyOf(endpoint, projectId, uuid);
      const row = s.entries.get(key);
      if (row === undefined) return undefined;
      // Most recently used last, so that the bound drops what no one asked for longest; written with the next change.
      s.entries.delete(key);
      s.entries.set(key, row);
      const found: StoredMetadata = { type: row[3] };
      if (row[4] !== null) found.algorithm = row[4];
      if (row[5] !== null) found.bitLength = row[5];
      return found;
    },
    record(endpoint, projectId, uuid, metadata) {
      const key = keyOf(endpoint, projectId, uuid);
      s.entries.delete(key);
      s.entries.set(key, [endpoint, projectId, uuid, metadata.type, metadata.algorithm ?? null, metadata.bitLength ?? null]);
      for (const oldest of s.entries.keys()) {
        if (s.entries.size <= maxEntries) break;
        s.entries.delete(oldest);
      }
      changed();
    },
    drop(endpoint, projectId, uuid) {
      if (s.entries.delete(keyOf(endpoint, projectId, uuid))) changed();
    },
    close() {
      if (closed) return;
      closed = true;
      s.flush();
      s.users -= 1;
      if (s.users === 0) open.delete(path);
    },
  };
}

function load(path: string, maxEntries: number, warn: (message: string) => void): Map<string, Row> {
  const entries = new Map<string, Row>();
  let text: string;
  try {
    text = readPrivateFile(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      warn(`cannot read Barbican's secret metadata from ${path} (${err instanceof Error ? err.message : String(err)}), starting without it`);
    }
    return entries;
  }
  let rows: unknown[] = [];
  try {
    const parsed = JSON.parse(text) as unknown;
    const doc = typeof parsed === 'object' && parsed !== null ? (parsed as Record<string, unknown>) : {};
    if (doc['version'] !== fileVersion || !Array.isArray(doc['entries'])) throw new Error(`not a version ${fileVersion} metadata file`);
    rows = doc['entries'] as unknown[];
  } catch (err) {
    warn(`cannot read Barbican's secret metadata from ${path} (${err instanceof Error ? err.message : String(err)}), starting without it`);
    return entries;
  }
  let bad = 0;
  for (const row of rows.slice(-maxEntries)) {
    if (isRow(row)) entries.set(keyOf(row[0], row[1], row[2]), row);
    else bad += 1;
  }
  if (bad > 0) warn(`${bad} malformed entries in ${path}, ignoring them`);
  return entries;
}

function isRow(row: unknown): row is Row {
  if (!Array.isArray(row) || row.length !== 6) return false;
  const [endpoint, project, uuid, type, algorithm, bitLength] = row as unknown[];
  return (
    typeof endpoint === 'string' &&
    endpoint.length > 0 &&
    endpoint.length <= 4096 &&
    typeof project === 'string' &&
    projectPattern.test(project) &&
    typeof uuid === 'string' &&
    uuidPattern.test(uuid) &&
    objectTypes.some((t) => t === type) &&
    (algorithm === null || (typeof algorithm === 'string' && algorithm.length <= 255)) &&
    (bitLength === null || (Number.isInteger(bitLength) && (bitLength as number) > 0 && (bitLength as number) <= 1_048_576))
  );
}
