#include "ops.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "check.h"

#ifndef HELPER_VERSION
#define HELPER_VERSION "0.1.0"
#endif
#ifndef LIBCRYPTSETUP_VERSION
#define LIBCRYPTSETUP_VERSION "unknown"
#endif

static const op_handler HANDLERS[] = {
  [OP_HELLO] = op_hello, [OP_HEADER] = op_header, [OP_OPEN] = op_open, [OP_CLOSE] = op_close,
  [OP_RESIZE] = op_resize, [OP_FORMAT] = op_format, [OP_KEY_TEST] = op_key_test, [OP_KEY_ADD] = op_key_add,
  [OP_KEY_CHANGE] = op_key_change, [OP_KEY_REMOVE] = op_key_remove, [OP_ERASE] = op_erase,
  [OP_TOKEN_SET] = op_token_set, [OP_STATUS] = op_status, [OP_LIST] = op_list, [OP_TARGETS] = op_targets,
  [OP_REMOVE_EMPTY] = op_remove_empty, [OP_READ] = op_read, [OP_SCAN_ZEROS] = op_scan_zeros, [OP_SYMLINK] = op_symlink, [OP_PROBE] = op_probe,
};

int op_hello(struct opctx *c) {
  struct buf b = {0};
  buf_printf(&b, "{\"protocol\":%d,\"helper\":\"%s\",\"libcryptsetup\":\"%s\",\"ops\":[", PROTO_VERSION, HELPER_VERSION,
             LIBCRYPTSETUP_VERSION);
  for (uint16_t op = 1; op <= OP_LAST; op++) buf_printf(&b, "%s\"%s\"", op > 1 ? "," : "", op_name(op));
  buf_put(&b, "]}", 2);
  reply_json(c, &b);
  buf_free(&b);
  return ST_OK;
}

/* libdevmapper keeps process-wide state (its ioctl version probe, udev cookie
 * semaphores, the name cache) and is not thread-safe: sixteen concurrent
 * activations crashed the helper. Operations that talk to device-mapper take
 * turns; the others (headers, keyslots, reads, probes) run in parallel. */
static pthread_mutex_t dm_lock = PTHREAD_MUTEX_INITIALIZER;

static int touches_dm(uint16_t op) {
  switch (op) {
  case OP_OPEN: case OP_CLOSE: case OP_RESIZE: case OP_STATUS: case OP_LIST: case OP_TARGETS: case OP_REMOVE_EMPTY:
    return 1;
  default:
    return 0;
  }
}

void op_run(struct request *req, struct response *resp, const char *const *symlink_dirs) {
  struct opctx c = {.req = req, .resp = resp, .devfd = -1, .symlink_dirs = symlink_dirs};
  int dm = touches_dm(req->op);
  if (dm) pthread_mutex_lock(&dm_lock);
  int st = HANDLERS[req->op](&c);
  if (dm) pthread_mutex_unlock(&dm_lock);
  if (st != ST_OK) {
    /* A failed op answers with MESSAGE and ERRNO only: drop what it may have begun to add. */
    buf_free(&resp->b);
    resp_begin(resp, req->op, req->id);
    struct buf m = {0};
    buf_printf(&m, "%s", c.msg[0] ? c.msg : "failed");
    if (c.cslog.len) {
      buf_put(&m, " (libcryptsetup: ", 17);
      buf_put(&m, c.cslog.data, c.cslog.len);
      buf_put(&m, ")", 1);
    }
    resp_field(resp, T_MESSAGE, m.data, (uint32_t)m.len);
    if (c.err) resp_i32(resp, T_ERRNO, c.err);
    buf_free(&m);
  }
  ctx_done(&c);
  resp->status = st;
}
