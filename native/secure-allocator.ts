import { allocatorOver, type SecureAllocator } from '../src/util/secure-memory.js';
import { loadNative, secureAlloc, secureLend, secureWipe } from './index.js';

/**
 * The SecureAllocator the daemon uses: every key byte in mlock'ed,
 * MADV_DONTDUMP memory from the addon (a slot of a shared locked page),
 * zeroed, detached and freed on wipe(); lend() is a view over the same
 * slot, detached on its wipe(). It keeps plainAllocator's contract (lengths, errors, stats); a view
 * taken before wipe() reads as empty afterwards rather than as zeros.
 *
 * A buffer dropped without wipe() is zeroed and released by the GC's
 * finalizer; like plainAllocator's, it stays counted in stats() until wiped.
 * @throws NativeError E_NATIVE_MISSING at once when the addon is not built,
 *   so a daemon can say so at start rather than at the first key.
 */
export function lockedAllocator(): SecureAllocator {
  loadNative();
  return allocatorOver({
    kind: 'locked',
    locked: true,
    // An empty secret has no bytes to protect; locking a page for it would only use up RLIMIT_MEMLOCK.
    take: (length) => (length === 0 ? Buffer.alloc(0) : secureAlloc(length)),
    release: (bytes) => {
      if (bytes.length > 0) secureWipe(bytes);
    },
    // A second view over the slot, no copy; wiping the view only detaches it (the addon tells the two apart).
    lend: (bytes) => (bytes.length === 0 ? Buffer.alloc(0) : secureLend(bytes)),
    revoke: (view) => {
      if (view.length > 0) secureWipe(view);
    },
  });
}
