import { readFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import type { RolesOptions } from '../options.js';

export type Role = 'agent' | 'admin';

/** Who asked, from SO_PEERCRED: for the audit stream. */
export interface Peer {
  pid: number;
  uid: number;
  gid: number;
}


/** Reads the peer's credentials (SO_PEERCRED) from a connected unix socket; injected so the server has no native dependency. */
export type PeerReader = (socket: Socket) => Peer;

/**
 * SO_PEERCRED carries only the primary gid; an agent admitted through a
 * supplementary group (the usual "add nova to the portcullis group") is found
 * in /proc. The pid is the one that connected, and is checked while its
 * connection is open, so it cannot have been reused yet.
 */
export function supplementaryGroups(pid: number): number[] {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const line = /^Groups:\s*(.*)$/m.exec(status);
    return (line?.[1] ?? '').split(/\s+/).filter((g) => g !== '').map(Number).filter(Number.isInteger);
  } catch {
    return [];
  }
}

/** The roles a peer holds. root is always admin; admin may do everything an agent may. */
export function rolesOf(peer: Peer, roles: RolesOptions, groups: readonly number[] = supplementaryGroups(peer.pid)): Set<Role> {
  const gids = new Set([peer.gid, ...groups]);
  const member = (role: { uids: number[]; gids: number[] }) => role.uids.includes(peer.uid) || role.gids.some((g) => gids.has(g));
  const held = new Set<Role>();
  if (peer.uid === 0 || member(roles.admin)) held.add('admin').add('agent');
  if (member(roles.agent)) held.add('agent');
  return held;
}
