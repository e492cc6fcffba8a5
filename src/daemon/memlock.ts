import { readFileSync } from 'node:fs';
import type { MemlockLimit } from '../../native/index.js';
import type { LogFields } from './log.js';

/**
 * Whether RLIMIT_MEMLOCK leaves room for the key cache (docs/native.md,
 * "RLIMIT_MEMLOCK"). Every secret in locked memory takes whole pages, so a
 * full cache needs about one page per entry; when the limit is lower, the
 * attach that finds it full fails with E_NATIVE_MLOCK. This says so at start.
 *
 * It warns rather than refuses: the limit caps how many keys can be held at
 * once, not whether the daemon works (the first keys always fit, and a full
 * limit fails one request with a code that names RLIMIT_MEMLOCK), max_entries
 * is an upper bound most hosts never reach, and the figure below is an
 * estimate. A daemon that refused to start on a host whose default 8 MiB
 * falls a few pages short would turn a capacity note into an outage.
 */

/** CAP_IPC_LOCK (linux/capability.h): mlock is not bounded by RLIMIT_MEMLOCK at all. */
const CAP_IPC_LOCK = 14n;
/** Pages each admitted request may hold besides the cache's own copy: the backend's copy and the caller's. */
const PAGES_PER_REQUEST = 2;
/** The local keystore's KEK, credentials, and slack. */
const SPARE_PAGES = 8;

/** The settings the need depends on (a Config has them). */
export interface MemlockSettings {
  cache: { max_entries: number };
  limits: { max_pending_requests: number };
}

export interface MemlockFacts {
  limit: MemlockLimit;
  /** CAP_IPC_LOCK is in the effective set. */
  capIpcLock: boolean;
  pageSize: number;
}

/** Bytes of locked memory a full cache plus every admitted request can take at once. */
export function memlockNeeded(config: MemlockSettings, pageSize: number): number {
  return (config.cache.max_entries + PAGES_PER_REQUEST * config.limits.max_pending_requests + SPARE_PAGES) * pageSize;
}

const mib = (bytes: number) => `${(bytes / 1048576).toFixed(1)} MiB`;

/** The warning to log at start, or undefined when the keys fit (or CAP_IPC_LOCK lifts the limit). */
export function memlockWarning(config: MemlockSettings, facts: MemlockFacts): { message: string; fields: LogFields } | undefined {
  if (facts.capIpcLock) return undefined;
  const needed = memlockNeeded(config, facts.pageSize);
  if (facts.limit.soft >= needed) return undefined;
  const wantMiB = Math.ceil(needed / 1048576);
  return {
    message:
      `RLIMIT_MEMLOCK is ${mib(facts.limit.soft)} but a full key cache (cache.max_entries ${config.cache.max_entries}) with ` +
      `${config.limits.max_pending_requests} requests in flight needs about ${mib(needed)}; attaches will fail with E_NATIVE_MLOCK once it is reached. ` +
      `Raise it: LimitMEMLOCK=${wantMiB}M in the unit (systemctl edit portcullis), or ulimit -l ${wantMiB * 1024} by hand; or lower cache.max_entries. Continuing`,
    fields: { memlock_soft: facts.limit.soft, memlock_hard: facts.limit.hard, memlock_needed: needed, page_size: facts.pageSize },
  };
}

/** This process's facts: the limit from the addon, CapEff from /proc, the page size from the aux vector. */
export function hostMemlockFacts(limit: MemlockLimit): MemlockFacts {
  return { limit, capIpcLock: hasEffectiveCapability(CAP_IPC_LOCK), pageSize: pageSize() };
}

export function hasEffectiveCapability(bit: bigint, status = '/proc/self/status'): boolean {
  try {
    const match = /^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync(status, 'utf8'));
    return match?.[1] !== undefined && ((BigInt(`0x${match[1]}`) >> bit) & 1n) === 1n;
  } catch {
    return false; // no /proc: assume the limit applies, which at worst warns needlessly
  }
}

/** AT_PAGESZ from /proc/self/auxv (Node exposes no page size); 4096 when unreadable. */
export function pageSize(auxv = '/proc/self/auxv'): number {
  const AT_PAGESZ = 6n;
  try {
    const bytes = readFileSync(auxv);
    for (let offset = 0; offset + 16 <= bytes.length; offset += 16) {
      const type = bytes.readBigUInt64LE(offset);
      if (type === 0n) break;
      if (type === AT_PAGESZ) return Number(bytes.readBigUInt64LE(offset + 8));
    }
  } catch {
    // fall through
  }
  return 4096;
}
