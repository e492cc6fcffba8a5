/*
 * Locked slabs of equal slots for secrets (slab.c). Not thread-safe by
 * itself: callers hold slab_lock.
 */
#ifndef PORTCULLIS_SLAB_H
#define PORTCULLIS_SLAB_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

struct slab {
  unsigned char *base;   /* page-aligned start of the mapping */
  size_t mapped;         /* bytes mapped and locked */
  size_t slot_size;      /* a power of two, or `mapped` for a slab of one large secret */
  uint32_t nslots, nfree;
  int cls;               /* size class, -1 for a large secret's own slab */
  struct slab *prev, *next; /* the class's list of slabs with room */
  struct slab *hnext;       /* hash chain by base */
  uint32_t *free_slots;     /* stack of free slot indices, nfree deep */
  void *owner[];            /* per slot: what secure.c keeps for it, NULL when free */
};

struct slab_stats {
  size_t locked_bytes; /* every slab's mapping, whole pages */
  size_t live_slots;
  size_t slabs;
};

extern pthread_mutex_t slab_lock;
extern struct slab_stats slab_totals;

/* A zeroed slot of at least `size` bytes for `owner`: 0, or an errno with *syscall naming the call that failed. */
int slab_take(size_t size, void *owner, struct slab **slab, uint32_t *index, const char **syscall);
/* Zeroes the slot and frees it; an empty slab is unmapped unless it is the last of its class with room. */
void slab_put(struct slab *slab, uint32_t index);
/* The owner of the live slot starting at ptr, or NULL when ptr is no live slot's start. */
void *slab_owner_of(const void *ptr, struct slab **slab, uint32_t *index);
unsigned char *slab_slot(struct slab *slab, uint32_t index);

#endif
