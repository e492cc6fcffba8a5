import type { Socket } from 'node:net';
import type { RolesOptions } from '../../config/daemon-options.js';

export type Role = 'agent' | 'admin';

/** Who asked, as the kernel recorded it at connect(): for roles and the audit stream. */
export interface Peer {
  pid: number;
  uid: number;
  gid: number;
  /**
   * Supplementary groups (SO_PEERGROUPS): how an agent admitted through a
   * group (the usual "add nova to the portcullis group") is found. Never read
   * from /proc/PID, which may by then describe a reused pid.
   */
  groups?: readonly number[];
}

/** Reads the peer's credentials (SO_PEERCRED) from a connected unix socket; injected so the server has no native dependency. */
export type PeerReader = (socket: Socket) => Peer;

/** The roles a peer holds. root is always admin; admin may do everything an agent may. */
export function rolesOf(peer: Peer, roles: RolesOptions): Set<Role> {
  const gids = new Set([peer.gid, ...(peer.groups ?? [])]);
  const member = (role: { uids: number[]; gids: number[] }) => role.uids.includes(peer.uid) || role.gids.some((g) => gids.has(g));
  const held = new Set<Role>();
  if (peer.uid === 0 || member(roles.admin)) held.add('admin').add('agent');
  if (member(roles.agent)) held.add('agent');
  return held;
}
