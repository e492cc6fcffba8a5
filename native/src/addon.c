/*
 * portcullis_native: the few things a key daemon needs from the kernel that
 * Node does not offer. Every export is a thin wrapper that checks its
 * arguments before the system call; native/index.ts types them for TS.
 */
#include "common.h"

static const struct {
  const char *name;
  napi_callback fn;
} exported[] = {
    {"peerCredentials", peer_credentials},
    {"peerGroups", peer_groups},
    {"setDumpable", set_dumpable},
    {"isDumpable", is_dumpable},
    {"secureAlloc", secure_alloc},
    {"secureWipe", secure_wipe},
    {"secureLend", secure_lend},
    {"secureStats", secure_stats},
    {"memlockLimit", memlock_limit},
    {"notify", notify_send},
};

static napi_value init(napi_env env, napi_value exports) {
  size_t i;
  for (i = 0; i < sizeof exported / sizeof exported[0]; i++) {
    napi_value fn;
    NAPI_CALL(env, napi_create_function(env, exported[i].name, NAPI_AUTO_LENGTH, exported[i].fn, NULL, &fn));
    NAPI_CALL(env, napi_set_named_property(env, exports, exported[i].name, fn));
  }
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
