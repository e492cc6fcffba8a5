/* Frames and fields: decoding a request body, encoding a response. */
#ifndef PORTCULLIS_FRAME_H
#define PORTCULLIS_FRAME_H

#include "buf.h"
#include "proto.h"

/* Why a body is malformed; any of these closes the connection. */
enum frame_error {
  FE_OK = 0, FE_SHORT, FE_VERSION, FE_KIND, FE_FIELD_PAST_END, FE_REPEATED_TAG, FE_TOO_MANY_FIELDS,
};

uint32_t get_u32(const uint8_t *p);
/* Whether a frame length prefix is acceptable (before its body is read). */
int frame_length_ok(uint32_t len);
/* Decodes a request body of len bytes; fields point into body. */
enum frame_error frame_decode(const uint8_t *body, size_t len, struct frame *out);
const char *frame_error_text(enum frame_error e);

/* A response under construction: the length prefix is patched by resp_finish. */
struct response {
  struct buf b;
  int32_t status;
};
void resp_begin(struct response *r, uint16_t op, uint32_t id);
void resp_field(struct response *r, uint16_t tag, const void *val, uint32_t len);
void resp_str(struct response *r, uint16_t tag, const char *s);
void resp_i32(struct response *r, uint16_t tag, int32_t v);
/* Sets status, patches the length; returns 0, or -1 when memory ran out. */
int resp_finish(struct response *r, int32_t status);

#endif
