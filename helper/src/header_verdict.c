/* header-verdict FILE: HEADER's verdict on an image file, for tests only.
 * The HEADER op takes block devices alone; this runs the same header.c on a
 * file (no loop devices where the tests run) and prints one JSON line:
 * {"status":N,"header":{...}} or {"status":N,"message":"..."}. */
#include <stdio.h>
#include <string.h>

#include "header.h"
#include "proto.h"

int main(int argc, char **argv) {
  if (argc != 2) {
    fputs("usage: header-verdict IMAGE-FILE\n", stderr);
    return 64;
  }
  struct request req = {.path = argv[1]};
  struct opctx c = {.req = &req, .devfd = -1};
  struct crypt_device *cd = NULL;
  struct buf out = {0}, hdr = {0};
  int st;
  int r = crypt_init(&cd, argv[1]);
  if (r < 0) st = fail_r(&c, r, "cannot open the image");
  else {
    ctx_log_hook(&c, cd);
    st = header_verdict(&c, cd, &hdr);
  }
  buf_printf(&out, "{\"status\":%d,", st);
  if (st == ST_OK) {
    buf_put(&out, "\"header\":", 9);
    buf_put(&out, hdr.data, hdr.len);
  } else {
    buf_put(&out, "\"message\":", 10);
    if (c.cslog.len) {
      buf_put(&c.cslog, "", 1);
      char m[1024];
      snprintf(m, sizeof m, "%s (libcryptsetup: %s)", c.msg, (const char *)c.cslog.data);
      buf_json_str(&out, m);
    } else buf_json_str(&out, c.msg);
  }
  buf_put(&out, "}\n", 2);
  fwrite(out.data, 1, out.len, stdout);
  buf_free(&out);
  buf_free(&hdr);
  ctx_done(&c);
  crypt_free(cd);
  return st == ST_OK || st == ST_NOT_LUKS ? 0 : 1;
}
