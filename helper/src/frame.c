#include "frame.h"

#include <string.h>

uint32_t get_u32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint16_t get_u16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

int frame_length_ok(uint32_t len) { return len >= REQ_HEADER_LEN && len <= FRAME_MAX; }

enum frame_error frame_decode(const uint8_t *body, size_t len, struct frame *out) {
  if (len < REQ_HEADER_LEN) return FE_SHORT;
  if (body[0] != PROTO_VERSION) return FE_VERSION;
  if (body[1] != KIND_REQUEST) return FE_KIND;
  out->op = get_u16(body + 2);
  out->id = get_u32(body + 4);
  out->nfields = 0;
  size_t pos = REQ_HEADER_LEN;
  while (pos < len) {
    /* Compare against what is left, never pos + n: no overflow on a huge length. */
    if (len - pos < 6) return FE_FIELD_PAST_END;
    uint16_t tag = get_u16(body + pos);
    uint32_t flen = get_u32(body + pos + 2);
    pos += 6;
    if (flen > len - pos) return FE_FIELD_PAST_END;
    for (size_t i = 0; i < out->nfields; i++)
      if (out->fields[i].tag == tag) return FE_REPEATED_TAG;
    if (out->nfields == MAX_FIELDS) return FE_TOO_MANY_FIELDS;
    out->fields[out->nfields++] = (struct field){.tag = tag, .len = flen, .val = body + pos};
    pos += flen;
  }
  return FE_OK;
}

const char *frame_error_text(enum frame_error e) {
  switch (e) {
  case FE_OK: return "ok";
  case FE_SHORT: return "frame shorter than a request header";
  case FE_VERSION: return "unsupported protocol version";
  case FE_KIND: return "frame is not a request";
  case FE_FIELD_PAST_END: return "a field runs past the end of the frame";
  case FE_REPEATED_TAG: return "a field tag is repeated";
  case FE_TOO_MANY_FIELDS: return "more fields than any request has";
  }
  return "malformed frame";
}

void resp_begin(struct response *r, uint16_t op, uint32_t id) {
  memset(r, 0, sizeof *r);
  buf_u32(&r->b, 0); /* length, patched */
  uint8_t head[2] = {PROTO_VERSION, KIND_RESPONSE};
  buf_put(&r->b, head, 2);
  buf_u16(&r->b, op);
  buf_u32(&r->b, id);
  buf_u32(&r->b, 0); /* status, patched */
}

void resp_field(struct response *r, uint16_t tag, const void *val, uint32_t len) {
  buf_u16(&r->b, tag);
  buf_u32(&r->b, len);
  buf_put(&r->b, val, len);
}

void resp_str(struct response *r, uint16_t tag, const char *s) { resp_field(r, tag, s, (uint32_t)strlen(s)); }

void resp_i32(struct response *r, uint16_t tag, int32_t v) {
  uint32_t u = (uint32_t)v;
  uint8_t x[4] = {(uint8_t)u, (uint8_t)(u >> 8), (uint8_t)(u >> 16), (uint8_t)(u >> 24)};
  resp_field(r, tag, x, 4);
}

static void put_u32_at(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}

int resp_finish(struct response *r, int32_t status) {
  r->status = status;
  if (r->b.oom || r->b.len - 4 > FRAME_MAX) return -1;
  put_u32_at(r->b.data, (uint32_t)(r->b.len - 4));
  put_u32_at(r->b.data + 12, (uint32_t)status);
  return 0;
}
