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

/** Live counts of one allocator, shared by its buffers. */
interface Pool {
  readonly memory: SecretMemory;
  liveBuffers: number;
  liveBytes: number;
}

/**
 * A secret buffer as a class: its methods live on the prototype and its
 * state in private fields. As object literals, each buffer carried three
 * closures and their context, about 150 bytes of heap on every cached key
 * (bench/memory-start.ts). `wiped` is a public data property for readers;
 * view() trusts only the private flag, so writing it back to false gives nothing back.
 */
class PooledSecret implements SecretBuffer {
  wiped = false;
  readonly #bytes: Buffer;
  readonly #pool: Pool;
  #gone = false;

  constructor(
    readonly length: number,
    bytes: Buffer,
    pool: Pool,
  ) {
    this.#bytes = bytes;
    this.#pool = pool;
  }

  view(): Buffer {
    if (this.#gone) throw keyError('E_OBJECT_WIPED', 'Secret buffer was wiped; its bytes are gone');
    return this.#bytes;
  }

  wipe(): void {
    if (this.#gone) return;
    this.#pool.memory.release(this.#bytes);
    this.#gone = true;
    this.wiped = true;
    this.#pool.liveBuffers -= 1;
    this.#pool.liveBytes -= this.length;
  }

  lend(onReturn?: () => void): SecretBuffer {
    return new LentSecret(this.view(), this.#pool.memory, onReturn);
  }
}

/** A lent view: view() until wipe(), which revokes it (detached, or zeroed when the memory can only copy). */
class LentSecret implements SecretBuffer {
  wiped = false;
  readonly length: number;
  readonly #view: Buffer;
  readonly #memory: SecretMemory;
  readonly #onReturn: (() => void) | undefined;
  #gone = false;

  constructor(bytes: Buffer, memory: SecretMemory, onReturn: (() => void) | undefined) {
    this.#view = memory.lend === undefined ? Buffer.from(bytes) : memory.lend(bytes);
    this.length = this.#view.length;
    this.#memory = memory;
    this.#onReturn = onReturn;
  }

  view(): Buffer {
    if (this.#gone) throw keyError('E_OBJECT_WIPED', 'The lent key was given back; its bytes are gone');
    return this.#view;
  }

  wipe(): void {
    if (this.#gone) return;
    this.#gone = true;
    this.wiped = true;
    if (this.#memory.revoke === undefined) this.#view.fill(0);
    else this.#memory.revoke(this.#view);
    this.#onReturn?.();
  }

  lend(onReturn?: () => void): SecretBuffer {
    return new LentSecret(this.view(), this.#memory, onReturn);
  }
}

/**
 * The SecureAllocator contract (length bounds, wipe-once, E_OBJECT_WIPED,
 * live counts) over any memory: plain here, locked from native/.
 */
export function allocatorOver(memory: SecretMemory): SecureAllocator {
  const pool: Pool = { memory, liveBuffers: 0, liveBytes: 0 };
  return {
    kind: memory.kind,
    alloc(length: number): SecretBuffer {
      if (!Number.isInteger(length) || length < 0 || length > MAX_SECRET_LENGTH) {
        throw keyError('E_INVALID_ARGUMENT', `Secret buffer length ${length} is out of range (0..1048576 bytes)`);
      }
      const bytes = memory.take(length);
      pool.liveBuffers += 1;
      pool.liveBytes += length;
      return new PooledSecret(length, bytes, pool);
    },
    stats: () => ({ liveBuffers: pool.liveBuffers, liveBytes: pool.liveBytes, locked: memory.locked }),
  };
}

/**
 * Ordinary memory, zeroed on wipe. Buffer.alloc never hands out slices of the
 * shared pool, so wiping one secret cannot touch unrelated data and no other
 * Buffer aliases it.
 */
export function plainAllocator(): SecureAllocator {
  return allocatorOver({ kind: 'plain', locked: false, take: (length) => Buffer.alloc(length), release: (bytes) => bytes.fill(0) });
}
