/*
 * Who is on the other end of a unix socket, and whether this process may be
 * core-dumped or ptraced.
 */
#include "common.h"

#include <errno.h>
#include <limits.h>
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
