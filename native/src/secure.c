/*
 * Secure buffers: key bytes in memory that is locked (never swapped), left
 * out of core dumps, and zeroed before it is given back to the kernel.
 *
 * Each buffer is its own anonymous mapping, so locking and unmapping one
 * cannot touch another, and is handed to JS as an external Buffer whose
 * finalizer releases it. secureWipe() zeroes, detaches (every JS view then
 * reads as empty) and releases at once, so locked memory is returned when the
 * key is dropped rather than when the GC gets round to it. The finalizer
 * still runs later; the registry below is how the pages are released exactly
 * once and how secureWipe() refuses memory that is not ours.
 */
#include "common.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

/* Far above any key; a bound so a bad length cannot lock gigabytes. */
#define SECURE_MAX (64 * 1024 * 1024)

struct block {
  unsigned char *base; /* page-aligned start of the mapping, and of the Buffer */
  size_t mapped;       /* whole pages mapped and locked */
  bool released;       /* pages zeroed, unlocked and unmapped */
  bool wiping;         /* secureWipe() is detaching this block */
  bool finalized;      /* the finalizer ran while wiping; secureWipe() frees the block */
  struct block *prev, *next;
};

/*
 * Live blocks, hashed by base address. It was one list that every wipe and
 * every finalizer walked, holding wiped blocks until the GC came: with the
 * key cache copying a key per get(), a few hundred thousand gets made each
 * wipe and finalize O(n), and the process spent minutes in finalizers
 * (bench/key-cache.ts). Now a block leaves the table when its pages are
 * released (only its finalizer hint reaches it after that), and lookups
 * walk one short chain.
 */
#define BUCKETS 16384
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER; /* worker threads load the addon too */
static struct block *buckets[BUCKETS];
static size_t locked_bytes;
static size_t live_buffers;
static size_t awaiting_gc; /* released blocks whose finalizer has not run yet */

static size_t bucket_of(const void *base) {
  uintptr_t page = (uintptr_t)base >> 12;
  return (size_t)((page ^ (page >> 14)) & (BUCKETS - 1));
}

/* Caller holds registry_lock. */
static void link_block(struct block *b) {
  struct block **head = &buckets[bucket_of(b->base)];
  b->prev = NULL;
  b->next = *head;
  if (*head != NULL) (*head)->prev = b;
  *head = b;
}

/* Caller holds registry_lock. */
static void unlink_block(struct block *b) {
  if (b->prev != NULL) b->prev->next = b->next;
  else buckets[bucket_of(b->base)] = b->next;
  if (b->next != NULL) b->next->prev = b->prev;
  b->prev = b->next = NULL;
}

/* Caller holds registry_lock. Zero before unlocking, so no key byte can reach swap. */
static void release_pages(struct block *b) {
  explicit_bzero(b->base, b->mapped);
  (void)munlock(b->base, b->mapped);
  (void)munmap(b->base, b->mapped);
  unlink_block(b); /* before another mapping can reuse the address */
  b->released = true;
  locked_bytes -= b->mapped;
  live_buffers -= 1;
  awaiting_gc += 1;
}

/* Caller holds registry_lock; the block's pages are released and its finalizer has run. */
static void free_block(struct block *b) {
  awaiting_gc -= 1;
  free(b);
}

static void finalize(napi_env env, void *data, void *hint) {
  struct block *b = hint;
  (void)env;
  (void)data;
  pthread_mutex_lock(&registry_lock);
  if (b->wiping) {
    /* Called from inside secureWipe()'s detach: leave the block to it. */
    b->finalized = true;
  } else {
    if (!b->released) release_pages(b);
    free_block(b);
  }
  pthread_mutex_unlock(&registry_lock);
}

static void throw_mlock(napi_env env, int err, size_t requested) {
  struct rlimit limit;
  char message[400];
  char soft[32] = "unknown";
  double soft_value = NAN;
  const char *errname = strerrorname_np(err);
  napi_value error;
  size_t already;
  if (getrlimit(RLIMIT_MEMLOCK, &limit) == 0) {
    soft_value = limit.rlim_cur == RLIM_INFINITY ? INFINITY : (double)limit.rlim_cur;
    if (limit.rlim_cur == RLIM_INFINITY) snprintf(soft, sizeof soft, "unlimited");
    else snprintf(soft, sizeof soft, "%llu bytes", (unsigned long long)limit.rlim_cur);
  }
  pthread_mutex_lock(&registry_lock);
  already = locked_bytes;
  pthread_mutex_unlock(&registry_lock);
  /* Says what to change, because the daemon's log is where an operator will first see this. */
  snprintf(message, sizeof message,
           "Could not lock %zu bytes of secure memory (mlock: %s): RLIMIT_MEMLOCK is %s and %zu bytes are "
           "locked already; raise it (LimitMEMLOCK= in the unit, ulimit -l) or grant CAP_IPC_LOCK",
           requested, errname == NULL ? "?" : errname, soft, already);
  error = errno_error(env, E_NATIVE_MLOCK, "mlock", err, message);
  if (error == NULL || !set_number(env, error, "requested", (double)requested) ||
      !set_number(env, error, "lockedBytes", (double)already) || !set_number(env, error, "limit", soft_value)) {
    throw_napi_failure(env, "errno_error");
    return;
  }
  napi_throw(env, error);
}

napi_value secure_alloc(napi_env env, napi_callback_info info) {
  napi_value argv[1], result;
  int64_t size;
  size_t page = (size_t)sysconf(_SC_PAGESIZE), mapped;
  void *base;
  struct block *b;
  if (!get_args(env, info, 1, argv, "secureAlloc")) return NULL;
  /* Not 0: V8 gives an empty ArrayBuffer no data pointer, so secureWipe() could not find it again. */
  if (!arg_integer(env, argv[0], "secureAlloc", "size", 1, SECURE_MAX, &size)) return NULL;
  mapped = ((size_t)size + page - 1) / page * page;

  base = mmap(NULL, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (base == MAP_FAILED) {
    throw_errno(env, E_NATIVE_CALL_FAILED, "mmap", errno, NULL);
    return NULL;
  }
  if (madvise(base, mapped, MADV_DONTDUMP) != 0) {
    int err = errno;
    (void)munmap(base, mapped);
    throw_errno(env, E_NATIVE_CALL_FAILED, "madvise", err, NULL);
    return NULL;
  }
#ifdef MADV_WIPEONFORK
  /* A forked child sees zeros here. Kernels before 4.14 lack it; DONTDUMP is what matters, so ignore that. */
  (void)madvise(base, mapped, MADV_WIPEONFORK);
#endif
  if (mlock(base, mapped) != 0) {
    int err = errno;
    (void)munmap(base, mapped);
    if (err == EPERM || err == ENOMEM || err == EAGAIN) throw_mlock(env, err, mapped);
    else throw_errno(env, E_NATIVE_CALL_FAILED, "mlock", err, NULL);
    return NULL;
  }
  b = calloc(1, sizeof *b);
  if (b == NULL) {
    (void)munlock(base, mapped);
    (void)munmap(base, mapped);
    throw_errno(env, E_NATIVE_CALL_FAILED, "calloc", ENOMEM, NULL);
    return NULL;
  }
  b->base = base;
  b->mapped = mapped;
  pthread_mutex_lock(&registry_lock);
  link_block(b);
  locked_bytes += mapped;
  live_buffers += 1;
  pthread_mutex_unlock(&registry_lock);

  if (napi_create_external_buffer(env, (size_t)size, base, finalize, b, &result) != napi_ok) {
    /* Node may still hold the finalizer and call it later, so the block stays (released) until then. */
    pthread_mutex_lock(&registry_lock);
    release_pages(b);
    pthread_mutex_unlock(&registry_lock);
    throw_napi_failure(env, "napi_create_external_buffer");
    return NULL;
  }
  return result;
}

napi_value secure_wipe(napi_env env, napi_callback_info info) {
  napi_value argv[1], arraybuffer;
  bool is_typedarray = false, detached = false;
  void *base = NULL;
  size_t length;
  napi_status status;
  struct block *b;
  if (!get_args(env, info, 1, argv, "secureWipe")) return NULL;
  NAPI_CALL(env, napi_is_typedarray(env, argv[0], &is_typedarray));
  if (!is_typedarray) {
    throw_type_error(env, "secureWipe() expects a Buffer from secureAlloc(), got %s", type_name(env, argv[0]));
    return NULL;
  }
  /* Look at the whole ArrayBuffer, so a subarray() wipes (and detaches) the allocation it views. */
  NAPI_CALL(env, napi_get_typedarray_info(env, argv[0], NULL, NULL, NULL, &arraybuffer, NULL));
  NAPI_CALL(env, napi_is_detached_arraybuffer(env, arraybuffer, &detached));
  if (detached) return NULL; /* wiped already: wiping twice is a no-op */
  NAPI_CALL(env, napi_get_arraybuffer_info(env, arraybuffer, &base, &length));

  pthread_mutex_lock(&registry_lock);
  /* Released blocks have left the table, so a base mapped again for a newer buffer finds that one. */
  for (b = buckets[bucket_of(base)]; b != NULL && b->base != base; b = b->next) continue;
  if (b != NULL) {
    explicit_bzero(b->base, b->mapped);
    b->wiping = true;
  }
  pthread_mutex_unlock(&registry_lock);
  if (b == NULL) {
    throw_type_error(env, "secureWipe() expects a Buffer from secureAlloc(); this one is ordinary memory");
    return NULL;
  }

  /* Unlocked: detaching may run the finalizer, which takes the lock itself. */
  status = napi_detach_arraybuffer(env, arraybuffer);
  pthread_mutex_lock(&registry_lock);
  b->wiping = false;
  /* Release only once JS cannot reach the pages; if detaching failed, the finalizer releases them. */
  if (status == napi_ok) release_pages(b);
  if (b->finalized) {
    if (!b->released) release_pages(b);
    free_block(b);
  }
  pthread_mutex_unlock(&registry_lock);
  if (status != napi_ok) throw_napi_failure(env, "napi_detach_arraybuffer");
  return NULL;
}

napi_value secure_stats(napi_env env, napi_callback_info info) {
  napi_value result;
  size_t bytes, buffers, awaiting;
  (void)info;
  pthread_mutex_lock(&registry_lock);
  bytes = locked_bytes;
  buffers = live_buffers;
  /* Wiped blocks wait for the GC to finalize their Buffer; tests watch that this reaches 0. */
  awaiting = awaiting_gc;
  pthread_mutex_unlock(&registry_lock);
  NAPI_CALL(env, napi_create_object(env, &result));
  if (!set_number(env, result, "lockedBytes", (double)bytes) ||
      !set_number(env, result, "liveBuffers", (double)buffers) ||
      !set_number(env, result, "wipedAwaitingGc", (double)awaiting)) {
    throw_napi_failure(env, "set_number");
    return NULL;
  }
  return result;
}

/* The daemon checks this at start, to say clearly that keys will not fit rather than fail on first use. */
napi_value memlock_limit(napi_env env, napi_callback_info info) {
  napi_value result;
  struct rlimit limit;
  (void)info;
  if (getrlimit(RLIMIT_MEMLOCK, &limit) != 0) {
    throw_errno(env, E_NATIVE_CALL_FAILED, "getrlimit", errno, NULL);
    return NULL;
  }
  NAPI_CALL(env, napi_create_object(env, &result));
  if (!set_number(env, result, "soft", limit.rlim_cur == RLIM_INFINITY ? INFINITY : (double)limit.rlim_cur) ||
      !set_number(env, result, "hard", limit.rlim_max == RLIM_INFINITY ? INFINITY : (double)limit.rlim_max)) {
    throw_napi_failure(env, "set_number");
    return NULL;
  }
  return result;
}
