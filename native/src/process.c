/*
 * Who is on the other end of a unix socket, and whether this process may be
 * core-dumped or ptraced.
 */
#include "common.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>

/*
 * The socket API authorises every request from the connecting process's
 * credentials. SO_PEERCRED is what the kernel recorded at connect(): the
 * peer cannot forge it, unlike anything it could send in a request.
 */
napi_value peer_credentials(napi_env env, napi_callback_info info) {
  napi_value argv[1], result;
  int64_t fd;
  struct ucred cred;
  socklen_t len = sizeof cred;
  if (!get_args(env, info, 1, argv, "peerCredentials")) return NULL;
  if (!arg_integer(env, argv[0], "peerCredentials", "fd", 0, INT_MAX, &fd)) return NULL;
  if (getsockopt((int)fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    throw_errno(env, E_NATIVE_CALL_FAILED, "getsockopt", errno, NULL);
    return NULL;
  }
  /* A socket that was never connected (or is not AF_UNIX) reports pid 0 rather than failing. */
  if (cred.pid <= 0) {
    throw_errno(env, E_NATIVE_CALL_FAILED, "getsockopt", ENOTCONN,
                "getsockopt(SO_PEERCRED) found no peer: the socket is not a connected unix socket");
    return NULL;
  }
  NAPI_CALL(env, napi_create_object(env, &result));
  if (!set_number(env, result, "pid", cred.pid) || !set_number(env, result, "uid", cred.uid) ||
      !set_number(env, result, "gid", cred.gid)) {
    throw_napi_failure(env, "set_number");
    return NULL;
  }
  return result;
}

#ifndef SO_PEERGROUPS
#define SO_PEERGROUPS 59 /* Linux 4.13; older libc headers lack the name */
#endif

/*
 * The peer's supplementary groups as the kernel recorded them at connect()
 * (SO_PEERGROUPS). Not /proc/PID/status: by the time it is read, the pid may
 * belong to another process.
 */
napi_value peer_groups(napi_env env, napi_callback_info info) {
  napi_value argv[1], result;
  int64_t fd;
  gid_t small[64];
  gid_t *groups = small;
  socklen_t len = sizeof small;
  uint32_t i, count;
  if (!get_args(env, info, 1, argv, "peerGroups")) return NULL;
  if (!arg_integer(env, argv[0], "peerGroups", "fd", 0, INT_MAX, &fd)) return NULL;
  if (getsockopt((int)fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) != 0) {
    /* ERANGE: more groups than fit; len now says how many bytes they need. */
    if (errno != ERANGE) {
      throw_errno(env, E_NATIVE_CALL_FAILED, "getsockopt", errno, NULL);
      return NULL;
    }
    groups = malloc(len);
    if (groups == NULL) {
      throw_errno(env, E_NATIVE_CALL_FAILED, "malloc", ENOMEM, NULL);
      return NULL;
    }
    if (getsockopt((int)fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) != 0) {
      int err = errno;
      free(groups);
      throw_errno(env, E_NATIVE_CALL_FAILED, "getsockopt", err, NULL);
      return NULL;
    }
  }
  count = (uint32_t)(len / sizeof(gid_t));
  if (napi_create_array_with_length(env, count, &result) != napi_ok) goto fail;
  for (i = 0; i < count; i++) {
    napi_value gid;
    if (napi_create_uint32(env, groups[i], &gid) != napi_ok || napi_set_element(env, result, i, gid) != napi_ok) goto fail;
  }
  if (groups != small) free(groups);
  return result;
fail:
  if (groups != small) free(groups);
  throw_napi_failure(env, "napi_set_element");
  return NULL;
}

/*
 * A non-dumpable process writes no core file and cannot be ptraced or have
 * its /proc/PID/mem read by other users: the daemon turns this off at start
 * so that key bytes on the JS heap, which mlock cannot cover, stay private.
 */
napi_value set_dumpable(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  bool flag;
  if (!get_args(env, info, 1, argv, "setDumpable")) return NULL;
  if (!arg_bool(env, argv[0], "setDumpable", "flag", &flag)) return NULL;
  if (prctl(PR_SET_DUMPABLE, flag ? 1UL : 0UL, 0UL, 0UL, 0UL) != 0) {
    throw_errno(env, E_NATIVE_CALL_FAILED, "prctl", errno, NULL);
    return NULL;
  }
  return NULL;
}

napi_value is_dumpable(napi_env env, napi_callback_info info) {
  napi_value result;
  int state;
  (void)info;
  state = prctl(PR_GET_DUMPABLE, 0UL, 0UL, 0UL, 0UL);
  if (state < 0) {
    throw_errno(env, E_NATIVE_CALL_FAILED, "prctl", errno, NULL);
    return NULL;
  }
  /* 2 ("suidsafe", readable by root only) still produces core files, so it counts as dumpable. */
  NAPI_CALL(env, napi_get_boolean(env, state != 0, &result));
  return result;
}
