/**
 * Typed access to the native addon (native/src, C, built by node-gyp during
 * `npm ci`). Node cannot read a unix socket's peer credentials, lock memory
 * or keep it out of core dumps, turn off dumpability, or send a unix
 * datagram; these thin wrappers can. See docs/native.md.
 *
 * The addon is loaded on first use, not at import, so a process that never
 * needs it (the CLI, most tests) runs where it was not built.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { Socket } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fromAddonError, nativeError } from './errors.js';

export interface PeerCredentials {
  pid: number;
  uid: number;
  gid: number;
}

export interface SecureStats {
  /** Bytes mlock'ed by the slabs that hold secure buffers (whole pages). */
  lockedBytes: number;
  /** Slots in use: buffers from secureAlloc() not yet wiped, and wiped ones a lent view still holds. */
  liveBuffers: number;
  /** Locked slabs mapped (one page of equal slots each, or a large secret's own pages). */
  slabs: number;
  /** Views from secureLend() whose finalizer has not run yet (wiped views count until the GC finalizes them). */
  lentViews: number;
  /** Wiped buffers (their slots already released) whose JS objects the GC has not finalized yet. */
  wipedAwaitingGc: number;
}

/** RLIMIT_MEMLOCK in bytes; Infinity when unlimited. */
export interface MemlockLimit {
  soft: number;
  hard: number;
}

/** The addon's exports, as native/src/addon.c registers them. */
interface Addon {
  peerCredentials(fd: number): PeerCredentials;
  peerGroups(fd: number): number[];
  setDumpable(flag: boolean): void;
  isDumpable(): boolean;
  secureAlloc(size: number): Buffer;
  secureWipe(buffer: Uint8Array): void;
  secureLend(buffer: Uint8Array): Buffer;
  secureStats(): SecureStats;
  memlockLimit(): MemlockLimit;
  notify(address: string, state: string): void;
}

const addonFunctions = [
  'peerCredentials', 'peerGroups', 'setDumpable', 'isDumpable', 'secureAlloc', 'secureWipe', 'secureLend', 'secureStats', 'memlockLimit', 'notify',
] as const;

/** Where node-gyp puts the addon, under the package root (found from this file, compiled into dist/ or not). */
export const addonPath: string = (() => {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'native', 'binding.gyp'))) break;
    const parent = dirname(dir);
    if (parent === dir) {
      dir = process.cwd();
      break;
    }
    dir = parent;
  }
  return join(dir, 'native', 'build', 'Release', 'portcullis_native.node');
})();

let loaded: Addon | undefined;

/**
 * Loads the addon once.
 * @throws NativeError E_NATIVE_MISSING when it was not built.
 */
export function loadNative(): void {
  addon();
}

function addon(): Addon {
  if (loaded !== undefined) return loaded;
  if (!existsSync(addonPath)) {
    throw nativeError(
      'E_NATIVE_MISSING',
      'native addon not built (native/build/Release/portcullis_native.node missing); run npm ci or make build',
      { details: { path: addonPath } },
    );
  }
  const exports: unknown = createRequire(import.meta.url)(addonPath);
  // A stale build from an older source would fail later in a confusing way; say so now.
  const missing = addonFunctions.filter((name) => typeof exports !== 'object' || exports === null || typeof Reflect.get(exports, name) !== 'function');
  if (missing.length > 0) {
    throw nativeError('E_NATIVE_MISSING', `native addon at ${addonPath} lacks ${missing.join(', ')}; rebuild it with npm ci or make build`);
  }
  loaded = exports as Addon;
  return loaded;
}

function call<T>(run: (native: Addon) => T): T {
  const native = addon();
  try {
    return run(native);
  } catch (err) {
    throw fromAddonError(err);
  }
}

/**
 * pid, uid and gid of the process at the other end of a connected unix
 * socket (SO_PEERCRED), as the kernel recorded them at connect().
 * @throws TypeError, RangeError for a bad fd; NativeError E_NATIVE_CALL_FAILED (errno ENOTSOCK, ENOTCONN, EBADF).
 */
export const peerCredentials = (fd: number): PeerCredentials => call((n) => n.peerCredentials(fd));
/** The peer's supplementary groups, as the kernel recorded them at connect() (SO_PEERGROUPS). */
export const peerGroups = (fd: number): number[] => call((n) => n.peerGroups(fd));

/**
 * The file descriptor under a net.Socket, read from its libuv handle (Node has no public API for it).
 * @throws NativeError E_NATIVE_NO_FD when the socket is closed or has no OS handle.
 */
export function socketFd(socket: Socket): number {
  const handle: unknown = Reflect.get(socket, '_handle');
  const fd: unknown = typeof handle === 'object' && handle !== null ? Reflect.get(handle, 'fd') : undefined;
  if (typeof fd !== 'number' || !Number.isInteger(fd) || fd < 0) {
    throw nativeError('E_NATIVE_NO_FD', 'The socket has no file descriptor (closed, not yet connected, or not an OS socket)');
  }
  return fd;
}

/**
 * prctl(PR_SET_DUMPABLE): false means no core dump, and no ptrace or
 * /proc/PID/mem reads by other users; the daemon sets it at start.
 * @throws TypeError for a non-boolean.
 */
export const setDumpable = (flag: boolean): void => call((n) => n.setDumpable(flag));
export const isDumpable = (): boolean => call((n) => n.isDumpable());

/**
 * mlock'ed, MADV_DONTDUMP (and MADV_WIPEONFORK) memory of `size` bytes,
 * zero-filled, released (zeroed first) by secureWipe() or by the GC. Up to
 * 2,048 bytes it is a slot of a shared locked page (the next power of two,
 * at least 16 bytes); larger sizes get whole pages of their own.
 * @throws TypeError for a non-number; RangeError outside 1..64 MiB; NativeError E_NATIVE_MLOCK when RLIMIT_MEMLOCK is reached.
 */
export function secureAlloc(size: number): Buffer {
  // Called on every cache hit that copies: the addon's own errors are the rare path, so no closure here.
  const native = loaded ?? addon();
  try {
    return native.secureAlloc(size);
  } catch (err) {
    throw fromAddonError(err);
  }
}

/**
 * Zeroes a buffer from secureAlloc() (all of it, also through a subarray),
 * detaches it so every view reads as empty, and frees its slot at once (once
 * no lent view holds it). Given a view from secureLend(), only detaches that
 * view. Wiping twice is a no-op.
 * @throws TypeError for anything that is not a Buffer from secureAlloc() or secureLend().
 */
export function secureWipe(buffer: Uint8Array): void {
  const native = loaded ?? addon();
  try {
    native.secureWipe(buffer);
  } catch (err) {
    throw fromAddonError(err);
  }
}

/**
 * A second Buffer over the same locked bytes as `buffer` (from secureAlloc()),
 * without copying them: the key cache lends its key this way. secureWipe() of
 * the view detaches it and leaves the bytes; the slot is not reused while a
 * view lives, so a view kept too long reads its lender's bytes or nothing,
 * never another secret.
 * @throws TypeError for a wiped buffer or one not from secureAlloc().
 */
export function secureLend(buffer: Uint8Array): Buffer {
  const native = loaded ?? addon();
  try {
    return native.secureLend(buffer);
  } catch (err) {
    throw fromAddonError(err);
  }
}
export const secureStats = (): SecureStats => call((n) => n.secureStats());
export const memlockLimit = (): MemlockLimit => call((n) => n.memlockLimit());

/**
 * sd_notify(3): sends `state` ("READY=1", "STATUS=...", several lines at
 * once) as one datagram to $NOTIFY_SOCKET.
 * @returns false when NOTIFY_SOCKET is unset (not started by systemd), true once sent.
 * @throws NativeError E_NATIVE_NOTIFY_SOCKET for an unusable address, E_NATIVE_CALL_FAILED when sending fails.
 */
export function notify(state: string): boolean {
  const address = process.env.NOTIFY_SOCKET;
  if (address === undefined || address === '') return false;
  call((n) => n.notify(address, state));
  return true;
}
