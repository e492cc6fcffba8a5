/*
 * Shared declarations of the portcullis native addon: argument checks that
 * throw before any system call is made, errors that carry a stable code, and
 * the exported functions.
 *
 * Convention: a helper that returns false has already thrown a JS exception;
 * the caller returns NULL at once.
 */
#ifndef PORTCULLIS_COMMON_H
#define PORTCULLIS_COMMON_H

#include <node_api.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Codes of errors thrown here; native/errors.ts registers and documents them. */
#define E_NATIVE_CALL_FAILED "E_NATIVE_CALL_FAILED"
#define E_NATIVE_MLOCK "E_NATIVE_MLOCK"
#define E_NATIVE_NOTIFY_SOCKET "E_NATIVE_NOTIFY_SOCKET"

/* Node's own codes for bad arguments, so callers can treat both alike. */
#define ERR_INVALID_ARG_TYPE "ERR_INVALID_ARG_TYPE"
#define ERR_OUT_OF_RANGE "ERR_OUT_OF_RANGE"

/* Returns NULL from the calling function, after throwing, when an N-API call fails. */
#define NAPI_CALL(env, call)                 \
  do {                                       \
    if ((call) != napi_ok) {                 \
      throw_napi_failure((env), #call);      \
      return NULL;                           \
    }                                        \
  } while (0)

/* Reads exactly `count` arguments of a call to `fn`; too few is a TypeError. */
bool get_args(napi_env env, napi_callback_info info, size_t count, napi_value *argv, const char *fn);

/* An integer in [min, max]: TypeError for a non-number, RangeError otherwise. */
bool arg_integer(napi_env env, napi_value value, const char *fn, const char *name, int64_t min, int64_t max,
                 int64_t *out);

bool arg_bool(napi_env env, napi_value value, const char *fn, const char *name, bool *out);

/*
 * A string of 1..cap-1 UTF-8 bytes without NUL, copied NUL-terminated into buf
 * (the kernel interfaces here take C strings, so an embedded NUL would cut it).
 */
bool arg_string(napi_env env, napi_value value, const char *fn, const char *name, char *buf, size_t cap,
                size_t *len);

/* The JS typeof of a value, for messages that quote what was passed. */
const char *type_name(napi_env env, napi_value value);

void throw_type_error(napi_env env, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void throw_range_error(napi_env env, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * Error{code, message, syscall, errno}, not yet thrown, so the caller can add
 * details first (N-API refuses property writes while an exception is
 * pending). errno is the symbolic name ("EPERM"), what operators search for.
 * A NULL message means "<syscall>() failed: <strerror> (<ENAME>)".
 */
napi_value errno_error(napi_env env, const char *code, const char *syscall, int err, const char *message);

/* errno_error() thrown at once. */
void throw_errno(napi_env env, const char *code, const char *syscall, int err, const char *message);

/* An N-API call failed: a bug or an exhausted heap, reported with the call's text. */
void throw_napi_failure(napi_env env, const char *call);

bool set_number(napi_env env, napi_value object, const char *key, double value);

/* The exported functions, one per JS export (registered in addon.c). */
/* process.c */
napi_value peer_credentials(napi_env env, napi_callback_info info);
napi_value peer_groups(napi_env env, napi_callback_info info);
napi_value set_dumpable(napi_env env, napi_callback_info info);
napi_value is_dumpable(napi_env env, napi_callback_info info);

/* secure.c (over slab.c) */
napi_value secure_alloc(napi_env env, napi_callback_info info);
napi_value secure_wipe(napi_env env, napi_callback_info info);
napi_value secure_lend(napi_env env, napi_callback_info info);
napi_value secure_stats(napi_env env, napi_callback_info info);
napi_value memlock_limit(napi_env env, napi_callback_info info);

/* notify.c */
napi_value notify_send(napi_env env, napi_callback_info info);

#endif
