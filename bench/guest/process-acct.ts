/**
 * Counts the processes a daemon spawned during a window, from the kernel's
 * own BSD process accounting (acct(2), CONFIG_BSD_PROCESS_ACCT_V3): the
 * kernel appends one record per exiting process with its pid and its parent's
 * pid. A process cannot escape it by being short-lived, and no wrapper sits in
 * the daemon. Counted: every exited process descending from the daemon (its
 * own children and theirs, e.g. the helper's), whatever spawned it. Not
 * counted: one still running when the window closes (the long-lived helper,
 * which is started before any window opens). Needs root; used in the guest.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';

/** struct acct_v3 (linux/acct.h): 64 bytes, ac_pid at 16, ac_ppid at 20, ac_comm at 48. */
const RECORD = 64;
const VERSION_3 = 3;

// Node has no binding for acct(2); Debian's Python reaches libc's through ctypes. The path is no secret.
const ACCT = 'import ctypes, sys\nlibc = ctypes.CDLL(None, use_errno=True)\nif libc.acct(sys.argv[1].encode() if len(sys.argv) > 1 else None) != 0:\n    sys.exit("acct: errno %d" % ctypes.get_errno())\n';

function acct(path?: string): void {
  const run = spawnSync('/usr/bin/python3', ['-c', ACCT, ...(path === undefined ? [] : [path])], { encoding: 'utf8' });
  if (run.status !== 0) throw new Error(`Cannot switch process accounting ${path === undefined ? 'off' : 'on'}: ${run.stderr.trim()}`);
}

export interface ExitedProcess {
  pid: number;
  ppid: number;
  comm: string;
}

/** The v3 records of an accounting file. */
export function parseAcct(bytes: Buffer): ExitedProcess[] {
  const out: ExitedProcess[] = [];
  for (let at = 0; at + RECORD <= bytes.length; at += RECORD) {
    if ((bytes[at + 1] ?? 0) !== VERSION_3) continue;
    const comm = bytes.subarray(at + 48, at + 64);
    const end = comm.indexOf(0);
    out.push({ pid: bytes.readUInt32LE(at + 16), ppid: bytes.readUInt32LE(at + 20), comm: comm.subarray(0, end < 0 ? 16 : end).toString('latin1') });
  }
  return out;
}

/** The exited processes descending from `root` (children, grandchildren, ...). */
export function descendants(records: readonly ExitedProcess[], root: number): ExitedProcess[] {
  const tree = new Set([root]);
  const found: ExitedProcess[] = [];
  // Records come in exit order, so a grandchild may precede its parent: repeat until nothing joins.
  for (let grew = true; grew; ) {
    grew = false;
    for (const r of records) {
      if (!tree.has(r.pid) && tree.has(r.ppid)) {
        tree.add(r.pid);
        found.push(r);
        grew = true;
      }
    }
  }
  return found;
}

/**
 * Runs `fn` with process accounting on, and answers the processes descending
 * from `root` that exited meanwhile, by name.
 */
export async function spawnedDuring(root: number, file: string, fn: () => Promise<void>): Promise<{ count: number; byName: Record<string, number> }> {
  writeFileSync(file, '');
  acct(file);
  try {
    await fn();
    // A witness: a count of 0 means something only if the kernel recorded this process' own child.
    spawnSync('/bin/true');
  } finally {
    acct();
  }
  const records = parseAcct(readFileSync(file));
  rmSync(file, { force: true });
  if (!records.some((r) => r.ppid === process.pid && r.comm === 'true')) throw new Error('Process accounting recorded not even the witness /bin/true; the count would mean nothing, refusing');
  const found = descendants(records, root);
  const byName: Record<string, number> = {};
  for (const p of found) byName[p.comm] = (byName[p.comm] ?? 0) + 1;
  return { count: found.length, byName };
}
