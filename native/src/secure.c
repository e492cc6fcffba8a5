/*
 * Secure buffers: key bytes in memory that is locked (never swapped), left
 * out of core dumps, and zeroed before it is given back. The memory is a
 * slot of a locked slab (slab.c); each buffer is still its own external
 * Buffer, so secureWipe() zeroes and detaches exactly that one (every JS
 * view then reads as empty) and its slot is free for the next secret at
 * once, not when the GC gets round to it.
 *
 * secureLend() makes a second Buffer over the same slot, so the key cache
 * can hand its bytes to a callback without copying them; secureWipe() of
 * that view only detaches it. The slot goes back to its slab when the owning
 * Buffer is wiped (or collected) and every lent view is gone, so a view kept
 * past its lender can never read the next secret put in the slot.
 */
#include "common.h"
#include "slab.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

/* Far above any key; a bound so a bad length cannot lock gigabytes. */
#define SECURE_MAX (64 * 1024 * 1024)

/* One allocation: its slot, the owning Buffer, and the views lent from it. */
struct lease {
  struct slab *slab;
  uint32_t index;
  uint32_t views;     /* lent views whose finalizer has not run */
  bool owner_gone;    /* the owning Buffer was wiped or finalized */
  bool finalized;     /* the owning Buffer's finalizer ran */
  bool released;      /* the slot is back in its slab */
  bool busy;          /* secure_wipe() is using the lease: finalizers must not free it */
  napi_ref owner;     /* weak: tells the owning Buffer from a lent view in secureWipe() */
};

static size_t awaiting_gc; /* released leases whose finalizers have not all run */
static size_t lent_views;

/* Caller holds slab_lock. */
static void settle(napi_env env, struct lease *l) {
  if (!l->released && l->owner_gone && l->views == 0) {
    slab_put(l->slab, l->index); /* zeroes the slot */
    l->released = true;
    awaiting_gc += 1;
  }
  if (l->released && l->finalized && l->views == 0 && !l->busy) {
    if (l->owner != NULL) (void)napi_delete_reference(env, l->owner);
    awaiting_gc -= 1;
    free(l);
  }
}

static void finalize_owner(napi_env env, void *data, void *hint) {
  struct lease *l = hint;
  (void)data;
  pthread_mutex_lock(&slab_lock);
  l->finalized = true;
  l->owner_gone = true;
  settle(env, l);
  pthread_mutex_unlock(&slab_lock);
}

static void finalize_view(napi_env env, void *data, void *hint) {
  struct lease *l = hint;
  (void)data;
  pthread_mutex_lock(&slab_lock);
  l->views -= 1;
  lent_views -= 1;
  settle(env, l);
  pthread_mutex_unlock(&slab_lock);
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
  pthread_mutex_lock(&slab_lock);
  already = slab_totals.locked_bytes;
  pthread_mutex_unlock(&slab_lock);
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
  napi_value argv[1], result, arraybuffer;
  int64_t size;
  struct lease *l;
  const char *syscall = NULL;
  int err;
  if (!get_args(env, info, 1, argv, "secureAlloc")) return NULL;
  /* Not 0: V8 gives an empty ArrayBuffer no data pointer, so secureWipe() could not find it again. */
  if (!arg_integer(env, argv[0], "secureAlloc", "size", 1, SECURE_MAX, &size)) return NULL;
  l = calloc(1, sizeof *l);
  if (l == NULL) {
    throw_errno(env, E_NATIVE_CALL_FAILED, "calloc", ENOMEM, NULL);
    return NULL;
  }
  pthread_mutex_lock(&slab_lock);
  err = slab_take((size_t)size, l, &l->slab, &l->index, &syscall);
  pthread_mutex_unlock(&slab_lock);
  if (err != 0) {
    free(l);
    if (strcmp(syscall, "mlock") == 0 && (err == EPERM || err == ENOMEM || err == EAGAIN)) throw_mlock(env, err, (size_t)size);
    else throw_errno(env, E_NATIVE_CALL_FAILED, syscall, err, NULL);
    return NULL;
  }
  if (napi_create_external_buffer(env, (size_t)size, slab_slot(l->slab, l->index), finalize_owner, l, &result) != napi_ok ||
      napi_get_typedarray_info(env, result, NULL, NULL, NULL, &arraybuffer, NULL) != napi_ok ||
      napi_create_reference(env, arraybuffer, 0, &l->owner) != napi_ok) {
    /* Node may still hold the finalizer and call it later, so the lease stays (released) until then. */
    pthread_mutex_lock(&slab_lock);
    l->owner_gone = true;
    settle(env, l);
    pthread_mutex_unlock(&slab_lock);
    throw_napi_failure(env, "napi_create_external_buffer");
    return NULL;
  }
  return result;
}

/* The ArrayBuffer under a Buffer from secureAlloc() or secureLend(), its data and lease; NULL after throwing, or when detached. */
static bool lease_of(napi_env env, napi_value value, const char *fn, napi_value *arraybuffer, struct lease **lease,
                     bool *detached) {
  bool is_typedarray = false;
  void *base = NULL;
  size_t length;
  struct slab *slab;
  uint32_t index;
  if (napi_is_typedarray(env, value, &is_typedarray) != napi_ok) return (throw_napi_failure(env, "napi_is_typedarray"), false);
  if (!is_typedarray) {
    throw_type_error(env, "%s() expects a Buffer from secureAlloc(), got %s", fn, type_name(env, value));
    return false;
  }
  /* The whole ArrayBuffer, so a subarray() reaches the allocation it views. */
  if (napi_get_typedarray_info(env, value, NULL, NULL, NULL, arraybuffer, NULL) != napi_ok ||
      napi_is_detached_arraybuffer(env, *arraybuffer, detached) != napi_ok) {
    throw_napi_failure(env, "napi_get_typedarray_info");
    return false;
  }
  if (*detached) return true;
  if (napi_get_arraybuffer_info(env, *arraybuffer, &base, &length) != napi_ok) return (throw_napi_failure(env, "napi_get_arraybuffer_info"), false);
  pthread_mutex_lock(&slab_lock);
  /* A released slot has no owner, so a slot reused for a newer secret finds that one. */
  *lease = base == NULL ? NULL : slab_owner_of(base, &slab, &index);
  pthread_mutex_unlock(&slab_lock);
  if (*lease == NULL) {
    throw_type_error(env, "%s() expects a Buffer from secureAlloc(); this one is ordinary memory", fn);
    return false;
  }
  return true;
}

napi_value secure_wipe(napi_env env, napi_callback_info info) {
  napi_value argv[1], arraybuffer, owner = NULL;
  bool detached = false, is_owner = false;
  napi_status status;
  struct lease *l = NULL;
  if (!get_args(env, info, 1, argv, "secureWipe")) return NULL;
  if (!lease_of(env, argv[0], "secureWipe", &arraybuffer, &l, &detached)) return NULL;
  if (detached) return NULL; /* wiped already: wiping twice is a no-op */
  NAPI_CALL(env, napi_get_reference_value(env, l->owner, &owner));
  if (owner != NULL) NAPI_CALL(env, napi_strict_equals(env, owner, arraybuffer, &is_owner));
  pthread_mutex_lock(&slab_lock);
  /* A lent view is only detached: the bytes are its lender's. The owner's are zeroed before anything else. */
  if (is_owner) explicit_bzero(slab_slot(l->slab, l->index), l->slab->slot_size);
  l->busy = true;
  pthread_mutex_unlock(&slab_lock);

  /* Unlocked: detaching may run a finalizer, which takes the lock itself. */
  status = napi_detach_arraybuffer(env, arraybuffer);
  pthread_mutex_lock(&slab_lock);
  l->busy = false;
  /* The slot goes back only once JS cannot reach it; if detaching failed, the finalizer gives it back. */
  if (status == napi_ok && is_owner) l->owner_gone = true;
  settle(env, l);
  pthread_mutex_unlock(&slab_lock);
  if (status != napi_ok) throw_napi_failure(env, "napi_detach_arraybuffer");
  return NULL;
}

napi_value secure_lend(napi_env env, napi_callback_info info) {
  napi_value argv[1], arraybuffer, result;
  bool detached = false;
  size_t length;
  struct lease *l = NULL;
  if (!get_args(env, info, 1, argv, "secureLend")) return NULL;
  if (!lease_of(env, argv[0], "secureLend", &arraybuffer, &l, &detached)) return NULL;
  if (detached) {
    throw_type_error(env, "secureLend() was given a wiped Buffer");
    return NULL;
  }
  NAPI_CALL(env, napi_get_arraybuffer_info(env, arraybuffer, NULL, &length));
  NAPI_CALL(env, napi_create_external_buffer(env, length, slab_slot(l->slab, l->index), finalize_view, l, &result));
  pthread_mutex_lock(&slab_lock);
  l->views += 1;
  lent_views += 1;
  pthread_mutex_unlock(&slab_lock);
  return result;
}

napi_value secure_stats(napi_env env, napi_callback_info info) {
  napi_value result;
  struct slab_stats totals;
  size_t awaiting, lent;
  (void)info;
  pthread_mutex_lock(&slab_lock);
  totals = slab_totals;
  /* Released leases wait for the GC to finalize their Buffers; tests watch that this reaches 0. */
  awaiting = awaiting_gc;
  lent = lent_views;
  pthread_mutex_unlock(&slab_lock);
  NAPI_CALL(env, napi_create_object(env, &result));
  if (!set_number(env, result, "lockedBytes", (double)totals.locked_bytes) ||
      !set_number(env, result, "liveBuffers", (double)totals.live_slots) ||
      !set_number(env, result, "slabs", (double)totals.slabs) ||
      !set_number(env, result, "lentViews", (double)lent) ||
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
