/* Key bytes live only here: mlock'd pages, excluded from core dumps, wiped on free. */
#ifndef PORTCULLIS_SECMEM_H
#define PORTCULLIS_SECMEM_H

#include <stddef.h>

struct secbuf {
  char *data; /* len bytes, then a NUL (libcryptsetup takes char *) */
  size_t len;
  size_t mapped;
};

/* A copy of src in locked memory, or NULL (errno set) when it cannot be locked. */
struct secbuf *secbuf_copy(const void *src, size_t len);
void secbuf_free(struct secbuf *s);

#endif
