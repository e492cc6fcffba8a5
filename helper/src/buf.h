/* A growable byte buffer for responses and JSON documents; an allocation
 * failure is sticky (oom) and checked once when the buffer is used. */
#ifndef PORTCULLIS_BUF_H
#define PORTCULLIS_BUF_H

#include <stddef.h>
#include <stdint.h>

struct buf {
  uint8_t *data;
  size_t len, cap;
  int oom;
};

void buf_put(struct buf *b, const void *p, size_t n);
void buf_u16(struct buf *b, uint16_t v);
void buf_u32(struct buf *b, uint32_t v);
void buf_u64(struct buf *b, uint64_t v);
void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A JSON string literal, quotes included; bytes that are not printable ASCII are \u-escaped. */
void buf_json_str(struct buf *b, const char *s);
/* Wipes (it may have held key bytes) and frees. */
void buf_free(struct buf *b);

#endif
