import { readFileSync } from 'node:fs';
import { daemonError } from './errors.js';

/**
 * `runtime.user`: once the privileged helper runs (a root child on a
 * socketpair), portcullisd itself needs no root: it gives it up for good
 * (groups, gid, uid) before it opens the key manager, the records or the
 * socket, so the code that parses HTTP, JSON, YAML and TLS from the world
 * runs unprivileged, and only the helper keeps the devices. Everything it
 * opens from then on must be this user's.
 */

export interface Account {
  name: string;
  uid: number;
  gid: number;
}

/** The account from /etc/passwd (where systemd-sysusers and adduser put system users). */
export function lookupAccount(name: string, passwd = '/etc/passwd'): Account {
  for (const line of readFileSync(passwd, 'utf8').split('\n')) {
    const [user, , uid, gid] = line.split(':');
    if (user === name && uid !== undefined && gid !== undefined && /^\d+$/.test(uid) && /^\d+$/.test(gid)) return { name, uid: Number(uid), gid: Number(gid) };
  }
  throw daemonError('E_PRIVILEGE_DROP', `runtime.user ${name} is not in ${passwd}; create it (systemd-sysusers creates portcullis) or unset runtime.user`);
}

/**
 * Becomes `account` for good. Not root: nothing to give up (a warning for
 * the caller to log). @throws E_PRIVILEGE_DROP when the kernel refuses, or root remains
 */
export function dropPrivileges(account: Account): string | undefined {
  if (process.getuid?.() !== 0) return `runtime.user is ${account.name}, but portcullisd does not run as root: nothing to give up`;
  try {
    process.setgroups?.([account.gid]);
    process.setgid?.(account.gid);
    process.setuid?.(account.uid);
  } catch (err) {
    throw daemonError('E_PRIVILEGE_DROP', `cannot become ${account.name} (uid ${account.uid}): ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  // setuid from root to another uid also clears the saved set-user-ID: proven by trying to get root back.
  let regained = false;
  try {
    process.setuid?.(0);
    regained = true;
  } catch {
    // expected: root is gone for good
  }
  if (regained || process.geteuid?.() === 0) throw daemonError('E_PRIVILEGE_DROP', `still root after becoming ${account.name}; refusing to serve`);
  return undefined;
}
