/* libFuzzer target: a frame body through the decoder and every op's field
 * checks (request_check), never an operation. Also round-trips the response
 * encoder. Build: make -C helper fuzz. */
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size >= 4) (void)frame_length_ok(get_u32(data));
  static struct frame f;
  if (frame_decode(data, size, &f) != FE_OK) return 0;
  struct request req;
  char msg[MSG_MAX];
  int nomem;
  if (request_check(&f, &req, msg, &nomem) == 0) {
    /* What a handler may rely on after the checks. */
    if ((req.have & BIT(T_NAME)) && check_name(req.name)) __builtin_trap();
    if ((req.have & BIT(T_PATH)) && check_path(req.path)) __builtin_trap();
    request_free(&req);
  } else {
    if (memchr(msg, '\0', MSG_MAX) == NULL || msg[0] == '\0') __builtin_trap();
  }
  struct response r;
  resp_begin(&r, f.op, f.id);
  resp_str(&r, T_MESSAGE, msg);
  if (resp_finish(&r, 1) == 0 && get_u32(r.b.data) != r.b.len - 4) __builtin_trap();
  buf_free(&r.b);
  return 0;
}
