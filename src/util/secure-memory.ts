import { keyError } from '../keyclient/errors.js';

/**
 * Memory that holds key bytes. The allocator is an interface so that the key
 * cache and every key path can use locked, non-dumpable memory from native/
 * when it is there, and ordinary zero-on-wipe buffers until then.
 */
export interface SecretBuffer {
  readonly length: number;
  /** True once wipe() ran; view() then throws. */
  readonly wiped: boolean;
  /** The bytes, without copying. Do not keep the view beyond the buffer's life. */
  view(): Buffer;
  /** Zeroes the bytes; idempotent. */
  wipe(): void;
  /**
   * The same bytes without a copy where the memory allows it (locked
   * memory: a second view over the slot), as a SecretBuffer whose wipe()
   * makes that view unusable (detached, or zeroed where it is a copy) and
   * leaves these bytes alone; `onReturn` runs at that first wipe(). Does not
   * count as an allocation.
   * @throws E_OBJECT_WIPED once this buffer was wiped.
   */
  lend(onReturn?: () => void): SecretBuffer;
}

export interface SecureMemoryStats {
  liveBuffers: number;
  liveBytes: number;
  locked: boolean;
}

export interface SecureAllocator {
  readonly kind: string;
  alloc(length: number): SecretBuffer;
  stats(): SecureMemoryStats;
}

/**
 * Copies `source` into a new secret buffer and zeroes `source`, so the caller
 * is left with one copy of the secret, in secure memory.
 */
export function adoptSecret(allocator: SecureAllocator, source: Uint8Array): SecretBuffer {
  const buf = allocator.alloc(source.length);
  buf.view().set(source);
  source.fill(0);
  return buf;
}

/** Copies without touching the source (the source is someone else's to wipe). */
export function copySecret(allocator: SecureAllocator, source: Uint8Array): SecretBuffer {
  const buf = allocator.alloc(source.length);
  buf.view().set(source);
  return buf;
}

/** Where an allocator's bytes come from and how they are destroyed. */
export interface SecretMemory {
  readonly kind: string;
  readonly locked: boolean;
  /** Fresh zeroed bytes that no other Buffer aliases. */
  take(length: number): Buffer;
  /** Zeroes (and releases) what take() gave; called once per buffer. */
  release(bytes: Buffer): void;
  /** A view of take()'s bytes that revoke() makes unusable; default: a plain copy that revoke() zeroes. */
  lend?(bytes: Buffer): Buffer;
  revoke?(view: Buffer): void;
}

const MAX_SECRET_LENGTH = 1 << 20;

/**
 * The SecureAllocator contract (length bounds, wipe-once, E_OBJECT_WIPED,
 * live counts) over any memory: plain here, locked from native/.
 */
export function allocatorOver(memory: SecretMemory): SecureAllocator {
  let liveBuffers = 0;
  let liveBytes = 0;
  return {
    kind: memory.kind,
    alloc(length: number): SecretBuffer {
      if (!Number.isInteger(length) || length < 0 || length > MAX_SECRET_LENGTH) {
        throw keyError('E_INVALID_ARGUMENT', `Secret buffer length ${length} is out of range (0..1048576 bytes)`);
      }
      const bytes = memory.take(length);
      let wiped = false;
      liveBuffers += 1;
      liveBytes += length;
      // `wiped` is a data property, not a getter: an accessor made of a fresh closure gives every
      // buffer its own hidden class, about 540 bytes of heap per buffer, which is half of what a
      // cached key cost (bench/memory-start.ts). view() trusts only the closure's flag.
      const buffer: { -readonly [K in keyof SecretBuffer]: SecretBuffer[K] } = {
        length,
        wiped: false,
        view() {
          if (wiped) throw keyError('E_OBJECT_WIPED', 'Secret buffer was wiped; its bytes are gone');
          return bytes;
        },
        wipe() {
          if (wiped) return;
          memory.release(bytes);
          wiped = true;
          buffer.wiped = true;
          liveBuffers -= 1;
          liveBytes -= length;
        },
        lend(onReturn) {
          if (wiped) throw keyError('E_OBJECT_WIPED', 'Secret buffer was wiped; its bytes are gone');
          return lentView(memory, bytes, onReturn);
        },
      };
      return buffer;
    },
    stats: () => ({ liveBuffers, liveBytes, locked: memory.locked }),
  };
}

/** A lent view: view() until wipe(), which revokes it (detached, or zeroed when the memory can only copy). */
function lentView(memory: SecretMemory, bytes: Buffer, onReturn: (() => void) | undefined): SecretBuffer {
  const view = memory.lend === undefined ? Buffer.from(bytes) : memory.lend(bytes);
  let revoked = false;
  const lent: { -readonly [K in keyof SecretBuffer]: SecretBuffer[K] } = {
    length: view.length,
    wiped: false,
    view() {
      if (revoked) throw keyError('E_OBJECT_WIPED', 'The lent key was given back; its bytes are gone');
      return view;
    },
    wipe() {
      if (revoked) return;
      revoked = true;
      lent.wiped = true;
      if (memory.revoke === undefined) view.fill(0);
      else memory.revoke(view);
      onReturn?.();
    },
    lend(onLentReturn) {
      if (revoked) throw keyError('E_OBJECT_WIPED', 'The lent key was given back; its bytes are gone');
      return lentView(memory, view, onLentReturn);
    },
  };
  return lent;
}

/**
 * Ordinary memory, zeroed on wipe. Buffer.alloc never hands out slices of the
 * shared pool, so wiping one secret cannot touch unrelated data and no other
 * Buffer aliases it.
 */
export function plainAllocator(): SecureAllocator {
  return allocatorOver({ kind: 'plain', locked: false, take: (length) => Buffer.alloc(length), release: (bytes) => bytes.fill(0) });
}
