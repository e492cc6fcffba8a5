#include "common.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Long enough for every message built here; vsnprintf truncates the rest. */
#define MESSAGE_MAX 512

const char *type_name(napi_env env, napi_value value) {
  napi_valuetype type;
  if (napi_typeof(env, value, &type) != napi_ok) return "unknown";
  switch (type) {
    case napi_undefined: return "undefined";
    case napi_null: return "null";
    case napi_boolean: return "boolean";
    case napi_number: return "number";
    case napi_string: return "string";
    case napi_symbol: return "symbol";
    case napi_object: return "object";
    case napi_function: return "function";
    case napi_external: return "external";
    case napi_bigint: return "bigint";
  }
  return "unknown";
}

void throw_type_error(napi_env env, const char *fmt, ...) {
  char message[MESSAGE_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(message, sizeof message, fmt, ap);
  va_end(ap);
  napi_throw_type_error(env, ERR_INVALID_ARG_TYPE, message);
}

void throw_range_error(napi_env env, const char *fmt, ...) {
  char message[MESSAGE_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(message, sizeof message, fmt, ap);
  va_end(ap);
  napi_throw_range_error(env, ERR_OUT_OF_RANGE, message);
}

bool get_args(napi_env env, napi_callback_info info, size_t count, napi_value *argv, const char *fn) {
  size_t argc = count;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) {
    throw_napi_failure(env, "napi_get_cb_info");
    return false;
  }
  if (argc < count) {
    throw_type_error(env, "%s() expects %zu argument(s), got %zu", fn, count, argc);
    return false;
  }
  return true;
}

bool arg_integer(napi_env env, napi_value value, const char *fn, const char *name, int64_t min, int64_t max,
                 int64_t *out) {
  napi_valuetype type;
  double number;
  if (napi_typeof(env, value, &type) != napi_ok || type != napi_number) {
    throw_type_error(env, "%s() expects %s to be a number, got %s", fn, name, type_name(env, value));
    return false;
  }
  if (napi_get_value_double(env, value, &number) != napi_ok) {
    throw_napi_failure(env, "napi_get_value_double");
    return false;
  }
  /* Compare as doubles first: converting an out-of-range double to int64 is undefined behaviour. */
  if (!isfinite(number) || floor(number) != number || number < (double)min || number > (double)max) {
    throw_range_error(env, "%s() expects %s to be an integer from %lld to %lld, got %g", fn, name, (long long)min,
                      (long long)max, number);
    return false;
  }
  *out = (int64_t)number;
  return true;
}

bool arg_bool(napi_env env, napi_value value, const char *fn, const char *name, bool *out) {
  napi_valuetype type;
  if (napi_typeof(env, value, &type) != napi_ok || type != napi_boolean) {
    throw_type_error(env, "%s() expects %s to be a boolean, got %s", fn, name, type_name(env, value));
    return false;
  }
  if (napi_get_value_bool(env, value, out) != napi_ok) {
    throw_napi_failure(env, "napi_get_value_bool");
    return false;
  }
  return true;
}

bool arg_string(napi_env env, napi_value value, const char *fn, const char *name, char *buf, size_t cap,
                size_t *len) {
  napi_valuetype type;
  size_t needed;
  if (napi_typeof(env, value, &type) != napi_ok || type != napi_string) {
    throw_type_error(env, "%s() expects %s to be a string, got %s", fn, name, type_name(env, value));
    return false;
  }
  /* Ask for the length first: N-API silently truncates a string that does not fit. */
  if (napi_get_value_string_utf8(env, value, NULL, 0, &needed) != napi_ok ||
      (needed < cap && napi_get_value_string_utf8(env, value, buf, cap, len) != napi_ok)) {
    throw_napi_failure(env, "napi_get_value_string_utf8");
    return false;
  }
  if (needed == 0 || needed >= cap) {
    throw_range_error(env, "%s() expects %s to be 1 to %zu bytes of UTF-8, got %zu", fn, name, cap - 1, needed);
    return false;
  }
  if (strlen(buf) != *len) {
    throw_range_error(env, "%s() expects %s without NUL characters", fn, name);
    return false;
  }
  return true;
}

napi_value errno_error(napi_env env, const char *code, const char *syscall, int err, const char *message) {
  char text[MESSAGE_MAX];
  const char *errname = strerrorname_np(err);
  napi_value code_value, message_value, error, syscall_value, errno_value;
  if (errname == NULL) errname = "EUNKNOWN";
  if (message == NULL) {
    snprintf(text, sizeof text, "%s() failed: %s (%s)", syscall, strerror(err), errname);
    message = text;
  }
  if (napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &code_value) != napi_ok ||
      napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &message_value) != napi_ok ||
      napi_create_error(env, code_value, message_value, &error) != napi_ok ||
      napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &syscall_value) != napi_ok ||
      napi_create_string_utf8(env, errname, NAPI_AUTO_LENGTH, &errno_value) != napi_ok ||
      napi_set_named_property(env, error, "syscall", syscall_value) != napi_ok ||
      napi_set_named_property(env, error, "errno", errno_value) != napi_ok) {
    return NULL;
  }
  return error;
}

void throw_errno(napi_env env, const char *code, const char *syscall, int err, const char *message) {
  napi_value error = errno_error(env, code, syscall, err, message);
  if (error == NULL) throw_napi_failure(env, "errno_error");
  else napi_throw(env, error);
}

void throw_napi_failure(napi_env env, const char *call) {
  bool pending = false;
  char message[MESSAGE_MAX];
  /* An exception already on its way (a throwing getter, a full heap) says more than we could. */
  if (napi_is_exception_pending(env, &pending) == napi_ok && pending) return;
  snprintf(message, sizeof message, "N-API call failed in the native addon: %s", call);
  napi_throw_error(env, E_NATIVE_CALL_FAILED, message);
}

bool set_number(napi_env env, napi_value object, const char *key, double value) {
  napi_value number;
  return napi_create_double(env, value, &number) == napi_ok &&
         napi_set_named_property(env, object, key, number) == napi_ok;
}
