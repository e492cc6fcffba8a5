#include "secmem.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

struct secbuf *secbuf_copy(const void *src, size_t len) {
  struct secbuf *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  long page = sysconf(_SC_PAGESIZE);
  size_t psz = page > 0 ? (size_t)page : 4096;
  s->mapped = (len + 1 + psz - 1) / psz * psz;
  /* Own pages, not the heap: they are locked and dump-excluded as a whole, and never shared with other data. */
  void *p = mmap(NULL, s->mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) { free(s); return NULL; }
  if (mlock(p, s->mapped) != 0 || madvise(p, s->mapped, MADV_DONTDUMP) != 0) {
    int e = errno;
    munmap(p, s->mapped);
    free(s);
    errno = e;
    return NULL;
  }
  s->data = p;
  s->len = len;
  memcpy(s->data, src, len);
  s->data[len] = '\0';
  return s;
}

void secbuf_free(struct secbuf *s) {
  if (!s) return;
  explicit_bzero(s->data, s->mapped);
  munlock(s->data, s->mapped);
  munmap(s->data, s->mapped);
  free(s);
}
