/**
 * How portcullisd meets this host: its privileged helper (started here, or
 * reached at the helper unit's socket), peer credentials and secure memory
 * from native/, sd_notify.
 */
import { isDumpable, notify, peerCredentials, peerGroups, setDumpable, socketFd } from '../../native/index.js';
import { lockedAllocator } from '../../native/secure-allocator.js';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { localDeviceOps } from '../luks/device/ops.js';
import { socketHelper } from '../luks/helper/socket.js';
import { spawnHelper } from '../luks/helper/spawn.js';
import type { MainDeps } from './main.js';

/** Everything but the device operations, which tests replace with the VM guest agent's. */
export function productionDeps(): MainDeps {
  return {
    // The devices are this host's: every question the kernel answers directly is asked in-process.
    ops: localDeviceOps(),
    readPeer: (socket) => {
      const fd = socketFd(socket);
      return { ...peerCredentials(fd), groups: peerGroups(fd) };
    },
    allocator: lockedAllocator(),
    helper: ({ path, socket, symlinkDirs, log }) => (socket !== undefined ? socketHelper(socket) : spawnHelper({ path: path ?? defaultHelperPath(), symlinkDirs, log })),
    notify: (state) => void notify(state),
    hardenProcess() {
      // No core dump and no ptrace by other users: key bytes live in this process.
      setDumpable(false);
      return isDumpable() ? ['process is still dumpable after prctl(PR_SET_DUMPABLE, 0), continuing'] : [];
    },
  };
}

/** The helper beside this package: installed (PKGLIBDIR/helper/portcullis-helper) or built in a checkout (helper/build/). */
export function defaultHelperPath(): string {
  const installed = fileURLToPath(new URL('../../../helper/portcullis-helper', import.meta.url));
  return existsSync(installed) ? installed : fileURLToPath(new URL('../../../helper/build/portcullis-helper', import.meta.url));
}
