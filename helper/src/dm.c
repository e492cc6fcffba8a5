#include "dm.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/dm-ioctl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

/* -ENOTCONN stands for "no device-mapper here": the control node is missing or refuses us. */
static int control(void) {
  int fd = open("/dev/mapper/control", O_RDWR | O_CLOEXEC);
  return fd < 0 ? -ENOTCONN : fd;
}

/* Runs cmd with a buffer that grows while the kernel says it is full; *out is the
 * answer (free with free()). name may be NULL, uuid may be NULL. */
static int dm_call(unsigned long cmd, const char *name, const char *uuid, uint32_t flags, struct dm_ioctl **out) {
  int fd = control();
  if (fd < 0) return fd;
  size_t size = 16384;
  for (int tries = 0; tries < 8; tries++, size *= 4) {
    struct dm_ioctl *io = calloc(1, size);
    if (!io) { close(fd); return -ENOMEM; }
    io->version[0] = DM_VERSION_MAJOR;
    io->version[1] = 0;
    io->version[2] = 0;
    io->data_size = (uint32_t)size;
    io->data_start = sizeof *io;
    io->flags = flags;
    if (name) strncpy(io->name, name, sizeof io->name - 1);
    if (uuid) strncpy(io->uuid, uuid, sizeof io->uuid - 1);
    if (ioctl(fd, cmd, io) < 0) {
      int e = -errno;
      free(io);
      close(fd);
      return e;
    }
    if (!(io->flags & DM_BUFFER_FULL_FLAG)) { close(fd); *out = io; return 0; }
    free(io);
  }
  close(fd);
  return -ENOBUFS;
}

int dm_state(const char *name, struct dm_state *st) {
  struct dm_ioctl *io;
  int r = dm_call(DM_DEV_STATUS, name, NULL, 0, &io);
  if (r < 0) return r;
  st->open_count = io->open_count;
  st->suspended = !!(io->flags & DM_SUSPEND_FLAG);
  st->has_live_table = !!(io->flags & DM_ACTIVE_PRESENT_FLAG);
  memcpy(st->uuid, io->uuid, sizeof st->uuid - 1);
  st->uuid[sizeof st->uuid - 1] = '\0';
  free(io);
  return 0;
}

int dm_deps(const char *name, dev_t *devs, size_t max, size_t *n) {
  struct dm_ioctl *io;
  int r = dm_call(DM_TABLE_DEPS, name, NULL, 0, &io);
  if (r < 0) return r;
  struct dm_target_deps *d = (struct dm_target_deps *)((char *)io + io->data_start);
  *n = 0;
  for (uint32_t i = 0; i < d->count && *n < max; i++) devs[(*n)++] = (dev_t)d->dev[i];
  free(io);
  return 0;
}

/* Whether the live table of name has a target of this type (status, never the table itself). */
static int has_target(const char *name, const char *type) {
  struct dm_ioctl *io;
  if (dm_call(DM_TABLE_STATUS, name, NULL, 0, &io) < 0) return 0;
  int found = 0;
  char *base = (char *)io + io->data_start, *end = (char *)io + io->data_size;
  struct dm_target_spec *t = (struct dm_target_spec *)base;
  for (uint32_t i = 0; i < io->target_count && (char *)(t + 1) <= end; i++) {
    if (strncmp(t->target_type, type, sizeof t->target_type) == 0) found = 1;
    if (t->next == 0) break;
    t = (struct dm_target_spec *)(base + t->next);
  }
  free(io);
  return found;
}

int dm_list_crypt(struct buf *json) {
  struct dm_ioctl *io;
  int r = dm_call(DM_LIST_DEVICES, NULL, NULL, 0, &io);
  if (r < 0) return r;
  buf_put(json, "[", 1);
  int first = 1;
  if (io->data_size > io->data_start) {
    char *base = (char *)io + io->data_start;
    struct dm_name_list *nl = (struct dm_name_list *)base;
    if (nl->dev) {
      for (;;) {
        if (has_target(nl->name, "crypt")) {
          if (!first) buf_put(json, ",", 1);
          buf_json_str(json, nl->name);
          first = 0;
        }
        if (!nl->next) break;
        nl = (struct dm_name_list *)((char *)nl + nl->next);
      }
    }
  }
  buf_put(json, "]", 1);
  free(io);
  return 0;
}

int dm_target_version(const char *target, uint32_t v[3]) {
  struct dm_ioctl *io;
  int r = dm_call(DM_LIST_VERSIONS, NULL, NULL, 0, &io);
  if (r < 0) return r;
  r = -ENOENT;
  char *base = (char *)io + io->data_start;
  struct dm_target_versions *tv = (struct dm_target_versions *)base;
  for (;;) {
    if (strcmp(tv->name, target) == 0) {
      memcpy(v, tv->version, sizeof tv->version);
      r = 0;
      break;
    }
    if (!tv->next) break;
    tv = (struct dm_target_versions *)((char *)tv + tv->next);
  }
  free(io);
  return r;
}

int dm_remove_by_uuid(const char *uuid) {
  struct dm_ioctl *io;
  int r = dm_call(DM_DEV_REMOVE, NULL, uuid, 0, &io);
  if (r == 0) free(io);
  return r;
}

int dm_available(void) {
  int fd = control();
  if (fd < 0) return fd;
  close(fd);
  return 0;
}
