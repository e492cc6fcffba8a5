import type { KeyedLock } from '../../util/keyed-lock.js';
import { keyedLock } from '../../util/keyed-lock.js';

/**
 * The service's lock names, one helper per kind of thing locked, so a key
 * never means two things: a path as the request spelled it (serialises two
 * requests naming the device one way, before it is pinned), a device by
 * major:minor (every way of naming it), a mapping name, and an ephemeral key
 * name (two first attaches of a project must not create two keys).
 */
export const lockKey = {
  devicePath: (path: string): string => `path:${path}`,
  device: (rdev: string): string => `rdev:${rdev}`,
  mapping: (name: string): string => `map:${name}`,
  ephemeralKey: (projectId: string, keyName: string): string => `ephemeral-key:${projectId}:${keyName}`,
} as const;

/** One lock table for every service of a daemon: volumes, ephemeral disks and erase wait on each other. */
export function serviceLocks(): KeyedLock {
  return keyedLock();
}
