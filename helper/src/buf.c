#include "buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int grow(struct buf *b, size_t n) {
  if (b->oom) return -1;
  if (n <= b->cap - b->len) return 0;
  size_t cap = b->cap ? b->cap : 256;
  while (cap - b->len < n) {
    if (cap > SIZE_MAX / 2) { b->oom = 1; return -1; }
    cap *= 2;
  }
  /* No realloc: the old block may hold secrets and must be wiped before it is freed. */
  uint8_t *p = malloc(cap);
  if (!p) { b->oom = 1; return -1; }
  if (b->len) memcpy(p, b->data, b->len);
  if (b->data) { explicit_bzero(b->data, b->cap); free(b->data); }
  b->data = p;
  b->cap = cap;
  return 0;
}

void buf_put(struct buf *b, const void *p, size_t n) {
  if (n == 0 || grow(b, n)) return;
  memcpy(b->data + b->len, p, n);
  b->len += n;
}

void buf_u16(struct buf *b, uint16_t v) {
  uint8_t x[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
  buf_put(b, x, 2);
}

void buf_u32(struct buf *b, uint32_t v) {
  uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
  buf_put(b, x, 4);
}

void buf_u64(struct buf *b, uint64_t v) {
  buf_u32(b, (uint32_t)v);
  buf_u32(b, (uint32_t)(v >> 32));
}

void buf_printf(struct buf *b, const char *fmt, ...) {
  char small[256];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(small, sizeof small, fmt, ap);
  va_end(ap);
  if (n < 0) { b->oom = 1; return; }
  if ((size_t)n < sizeof small) { buf_put(b, small, (size_t)n); return; }
  if (grow(b, (size_t)n + 1)) return;
  va_start(ap, fmt);
  vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
}

/* Length of the valid UTF-8 sequence at p (1..4), or 0 when it is not one. */
static size_t utf8_len(const unsigned char *p) {
  if (p[0] >= 0xc2 && p[0] <= 0xdf) return (p[1] & 0xc0) == 0x80 ? 2 : 0;
  if (p[0] >= 0xe0 && p[0] <= 0xef) {
    if ((p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80) return 0;
    if (p[0] == 0xe0 && p[1] < 0xa0) return 0;  /* overlong */
    if (p[0] == 0xed && p[1] >= 0xa0) return 0; /* surrogate */
    return 3;
  }
  if (p[0] >= 0xf0 && p[0] <= 0xf4) {
    if ((p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80 || (p[3] & 0xc0) != 0x80) return 0;
    if (p[0] == 0xf0 && p[1] < 0x90) return 0;
    if (p[0] == 0xf4 && p[1] >= 0x90) return 0;
    return 4;
  }
  return 0;
}

void buf_json_str(struct buf *b, const char *s) {
  buf_put(b, "\"", 1);
  for (const unsigned char *p = (const unsigned char *)s; *p;) {
    if (*p == '"' || *p == '\\') { buf_put(b, "\\", 1); buf_put(b, p++, 1); }
    else if (*p < 0x20 || *p == 0x7f) buf_printf(b, "\\u%04x", *p++);
    else if (*p < 0x80) buf_put(b, p++, 1);
    else {
      /* Header strings come from disk: pass valid UTF-8, replace the rest, so the JSON stays valid. */
      size_t n = utf8_len(p);
      if (n) { buf_put(b, p, n); p += n; }
      else { buf_put(b, "\\ufffd", 6); p++; }
    }
  }
  buf_put(b, "\"", 1);
}

void buf_free(struct buf *b) {
  if (b->data) { explicit_bzero(b->data, b->cap); free(b->data); }
  memset(b, 0, sizeof *b);
}
