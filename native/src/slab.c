/*
 * Locked slabs: key bytes share pages. A key of 64 bytes used to take a page
 * of its own (4,096 bytes of RLIMIT_MEMLOCK, and mmap, mlock, munlock, munmap
 * per copy); now small secrets take a slot in a page of equal slots, sized
 * by powers of two from 16 to 2,048 bytes, and only larger ones get pages of
 * their own. Every slab is its own anonymous mapping, locked, MADV_DONTDUMP
 * and MADV_WIPEONFORK, so what held for a page per key holds for a slot.
 *
 * Pure C, no N-API: secure.c hands the slots to JS. The caller holds
 * slab_lock around every call.
 */
#include "slab.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define MIN_SHIFT 4  /* 16-byte slots */
#define MAX_SHIFT 11 /* 2,048-byte slots; anything larger is a slab of one slot */
#define CLASSES (MAX_SHIFT - MIN_SHIFT + 1)
#define BUCKETS 4096

pthread_mutex_t slab_lock = PTHREAD_MUTEX_INITIALIZER; /* worker threads load the addon too */
struct slab_stats slab_totals;

/* Slabs with a free slot, per size class; a slab leaves its list when full. */
static struct slab *partial[CLASSES];
/* Every slab, hashed by the page it starts at, so a pointer finds its slab in one short chain. */
static struct slab *buckets[BUCKETS];

static size_t page_size(void) {
  static size_t page;
  if (page == 0) page = (size_t)sysconf(_SC_PAGESIZE);
  return page;
}

static size_t bucket_of(uintptr_t page_addr) {
  uintptr_t p = page_addr >> 12;
  return (size_t)((p ^ (p >> 12)) & (BUCKETS - 1));
}

static void list_push(struct slab **head, struct slab *s) {
  s->prev = NULL;
  s->next = *head;
  if (*head != NULL) (*head)->prev = s;
  *head = s;
}

static void list_remove(struct slab **head, struct slab *s) {
  if (s->prev != NULL) s->prev->next = s->next;
  else *head = s->next;
  if (s->next != NULL) s->next->prev = s->prev;
  s->prev = s->next = NULL;
}

static int class_of(size_t size) {
  int shift = MIN_SHIFT;
  while (shift <= MAX_SHIFT && ((size_t)1 << shift) < size) shift++;
  return shift > MAX_SHIFT ? -1 : shift - MIN_SHIFT;
}

/* Maps, marks and locks a new slab; 0 or an errno (with *syscall naming the call that failed). */
static int slab_new(size_t slot_size, size_t mapped, int cls, struct slab **out, const char **syscall) {
  uint32_t nslots = (uint32_t)(mapped / slot_size), i;
  struct slab *s;
  void *base = mmap(NULL, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (base == MAP_FAILED) return (*syscall = "mmap", errno);
  if (madvise(base, mapped, MADV_DONTDUMP) != 0) {
    int err = errno;
    (void)munmap(base, mapped);
    return (*syscall = "madvise", err);
  }
#ifdef MADV_WIPEONFORK
  /* A forked child sees zeros here. Kernels before 4.14 lack it; DONTDUMP is what matters, so ignore that. */
  (void)madvise(base, mapped, MADV_WIPEONFORK);
#endif
  if (mlock(base, mapped) != 0) {
    int err = errno;
    (void)munmap(base, mapped);
    return (*syscall = "mlock", err);
  }
  s = calloc(1, sizeof *s + nslots * (sizeof s->owner[0] + sizeof s->free_slots[0]));
  if (s == NULL) {
    (void)munlock(base, mapped);
    (void)munmap(base, mapped);
    return (*syscall = "calloc", ENOMEM);
  }
  s->base = base;
  s->mapped = mapped;
  s->slot_size = slot_size;
  s->nslots = nslots;
  s->cls = cls;
  s->free_slots = (uint32_t *)(s->owner + nslots);
  /* Lowest slot on top, so a freed slot is the next one handed out (tests watch reuse). */
  for (i = 0; i < nslots; i++) s->free_slots[i] = nslots - 1 - i;
  s->nfree = nslots;
  s->hnext = buckets[bucket_of((uintptr_t)base)];
  buckets[bucket_of((uintptr_t)base)] = s;
  slab_totals.locked_bytes += mapped;
  slab_totals.slabs += 1;
  *out = s;
  return 0;
}

/* Zeroes before unlocking, so no key byte can reach swap; unhashed before the address can be mapped again. */
static void slab_free(struct slab *s) {
  struct slab **p = &buckets[bucket_of((uintptr_t)s->base)];
  while (*p != s) p = &(*p)->hnext;
  *p = s->hnext;
  explicit_bzero(s->base, s->mapped);
  (void)munlock(s->base, s->mapped);
  (void)munmap(s->base, s->mapped);
  slab_totals.locked_bytes -= s->mapped;
  slab_totals.slabs -= 1;
  free(s);
}

int slab_take(size_t size, void *owner, struct slab **slab, uint32_t *index, const char **syscall) {
  int cls = class_of(size), err;
  struct slab *s;
  uint32_t i;
  if (cls < 0) {
    size_t page = page_size();
    err = slab_new(((size + page - 1) / page) * page, ((size + page - 1) / page) * page, -1, &s, syscall);
    if (err != 0) return err;
  } else if (partial[cls] != NULL) {
    s = partial[cls];
  } else {
    err = slab_new((size_t)1 << (cls + MIN_SHIFT), page_size(), cls, &s, syscall);
    if (err != 0) return err;
    list_push(&partial[cls], s);
  }
  i = s->free_slots[--s->nfree];
  s->owner[i] = owner;
  if (s->nfree == 0 && cls >= 0) list_remove(&partial[cls], s);
  slab_totals.live_slots += 1;
  *slab = s;
  *index = i;
  return 0;
}

void slab_put(struct slab *s, uint32_t index) {
  explicit_bzero(slab_slot(s, index), s->slot_size);
  s->owner[index] = NULL;
  s->free_slots[s->nfree++] = index;
  slab_totals.live_slots -= 1;
  if (s->cls < 0) {
    slab_free(s);
    return;
  }
  if (s->nfree == 1) list_push(&partial[s->cls], s);
  /* An empty slab goes back to the kernel at once, so locked memory follows the keys held (and a process
   * that holds none locks nothing). A key cache holding a key keeps that key's slab, so copies made on
   * cache hits take and give back slots in it without a system call. */
  if (s->nfree == s->nslots) {
    list_remove(&partial[s->cls], s);
    slab_free(s);
  }
}

void *slab_owner_of(const void *ptr, struct slab **slab, uint32_t *index) {
  uintptr_t addr = (uintptr_t)ptr, start = addr & ~(uintptr_t)(page_size() - 1);
  struct slab *s;
  for (s = buckets[bucket_of(start)]; s != NULL && (uintptr_t)s->base != start; s = s->hnext) continue;
  if (s == NULL || (addr - start) % s->slot_size != 0) return NULL;
  *slab = s;
  *index = (uint32_t)((addr - start) / s->slot_size);
  return *index < s->nslots ? s->owner[*index] : NULL;
}

unsigned char *slab_slot(struct slab *s, uint32_t index) {
  return s->base + (size_t)index * s->slot_size;
}
