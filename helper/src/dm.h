/* Device-mapper ioctls on /dev/mapper/control for what libcryptsetup has no call
 * for: open count and suspension, the list of mappings, target versions, and
 * removing a half-created mapping. Never asks for a table (it holds the key). */
#ifndef PORTCULLIS_DM_H
#define PORTCULLIS_DM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "buf.h"

struct dm_state {
  int32_t open_count;
  int suspended;
  int has_live_table;
  char uuid[129];
};

/* All return 0 or a negative errno: -ENOTCONN when /dev/mapper/control cannot be opened
 * (no device-mapper here, or no privilege), -ENXIO when the mapping does not exist. */
int dm_state(const char *name, struct dm_state *st);
/* The devices the mapping's live table uses. */
int dm_deps(const char *name, dev_t *devs, size_t max, size_t *n);
/* Appends a JSON array of the names of mappings whose live table has a crypt target. */
int dm_list_crypt(struct buf *json);
/* The crypt target's version, or -ENOENT when the kernel has not loaded it. */
int dm_target_version(const char *target, uint32_t v[3]);
int dm_remove_by_uuid(const char *uuid);
/* 0 when /dev/mapper/control opens, else -ENOTCONN. */
int dm_available(void);

#endif
