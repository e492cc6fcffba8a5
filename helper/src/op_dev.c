/* Devices without libcryptsetup: READ, SCAN_ZEROS, SYMLINK; and device-mapper's
 * LIST, TARGETS, REMOVE_EMPTY. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "dm.h"
#include "ops.h"


/* Reads up to len bytes at off; fewer only at the end of the device. */
static ssize_t read_at(int fd, uint8_t *p, size_t len, uint64_t off) {
  size_t got = 0;
  while (got < len) {
    ssize_t n = pread(fd, p + got, len - got, (off_t)(off + got));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -errno;
    if (n == 0) break;
    got += (size_t)n;
  }
  return (ssize_t)got;
}

int op_read(struct opctx *c) {
  int st = open_for_read(c);
  if (st) return st;
  uint8_t *data = malloc(c->req->length ? c->req->length : 1);
  if (!data) return fail(c, ST_NOMEM, -ENOMEM, "cannot allocate %llu bytes", (unsigned long long)c->req->length);
  ssize_t n = read_at(c->devfd, data, c->req->length, c->req->offset);
  if (n < 0) st = fail(c, status_of((int)n), (int)n, "cannot read %s: %s", c->req->path, strerror((int)-n));
  else resp_field(c->resp, T_DATA, data, (uint32_t)n);
  free(data);
  return st;
}

int op_scan_zeros(struct opctx *c) {
  int st = open_for_read(c);
  if (st) return st;
  const size_t chunk = 1024 * 1024;
  uint8_t *data = malloc(chunk);
  if (!data) return fail(c, ST_NOMEM, -ENOMEM, "out of memory");
  uint64_t scanned = 0;
  long long first = -1;
  while (scanned < c->req->length && first < 0) {
    size_t want = c->req->length - scanned < chunk ? (size_t)(c->req->length - scanned) : chunk;
    ssize_t n = read_at(c->devfd, data, want, scanned);
    if (n < 0) { st = fail(c, status_of((int)n), (int)n, "cannot read %s: %s", c->req->path, strerror((int)-n)); break; }
    for (ssize_t i = 0; i < n; i++)
      if (data[i]) { first = (long long)(scanned + (uint64_t)i); break; }
    scanned += (uint64_t)n;
    if ((size_t)n < want) break;
  }
  free(data);
  if (st) return st;
  struct buf b = {0};
  if (first >= 0) buf_printf(&b, "{\"scanned\":%llu,\"first_non_zero\":%lld}", (unsigned long long)scanned, first);
  else buf_printf(&b, "{\"scanned\":%llu,\"first_non_zero\":null}", (unsigned long long)scanned);
  reply_json(c, &b);
  buf_free(&b);
  return ST_OK;
}

/* LINK's directory, resolved, must be one of the --symlink-dir directories (resolved) or below one. */
static int link_allowed(const char *link, const char *const *dirs) {
  char parent[PATH_MAX], real[PATH_MAX], rdir[PATH_MAX];
  snprintf(parent, sizeof parent, "%s", link);
  char *slash = strrchr(parent, '/');
  if (!slash || slash == parent) return 0;
  *slash = '\0';
  if (!realpath(parent, real)) return 0;
  for (; dirs && *dirs; dirs++) {
    if (!realpath(*dirs, rdir)) continue;
    size_t n = strlen(rdir);
    if (strcmp(real, rdir) == 0 || (strncmp(real, rdir, n) == 0 && real[n] == '/')) return 1;
  }
  return 0;
}

int op_symlink(struct opctx *c) {
  const char *link = c->req->link, *target = c->req->path;
  if (!c->symlink_dirs || !c->symlink_dirs[0]) return fail(c, ST_EINVAL, -EPERM, "SYMLINK is off: the helper was started without --symlink-dir");
  if (!link_allowed(link, c->symlink_dirs)) return fail(c, ST_EINVAL, -EPERM, "%s is outside every --symlink-dir", link);
  struct stat st;
  if (stat(target, &st) != 0) return fail(c, ST_NOT_FOUND, -errno, "%s: %s", target, strerror(errno));
  if (!S_ISBLK(st.st_mode)) return fail(c, ST_EINVAL, -ENOTBLK, "%s is not a block device", target);
  if (lstat(link, &st) == 0 && !S_ISLNK(st.st_mode)) return fail(c, ST_EINVAL, -EEXIST, "%s exists and is not a symlink", link);
  char tmp[PATH_MAX];
  snprintf(tmp, sizeof tmp, "%s.portcullis-%d-%lu", link, getpid(), (unsigned long)pthread_self());
  if (symlink(target, tmp) != 0) return fail(c, status_of(-errno), -errno, "cannot create a symlink beside %s: %s", link, strerror(errno));
  /* rename replaces atomically: a reader sees the old link or the new one, never none. */
  if (rename(tmp, link) != 0) {
    int e = errno;
    unlink(tmp);
    return fail(c, status_of(-e), -e, "cannot put the symlink at %s: %s", link, strerror(e));
  }
  return ST_OK;
}

static int dm_fail(struct opctx *c, int r, const char *what) {
  if (r == -ENOTCONN) return fail(c, ST_DM_UNAVAILABLE, r, "device-mapper is not available (/dev/mapper/control), for %s", what);
  return fail(c, status_of(r), r, "%s: %s", what, strerror(-r));
}

int op_list(struct opctx *c) {
  struct buf b = {0};
  int r = dm_list_crypt(&b);
  int st = r < 0 ? dm_fail(c, r, "list mappings") : ST_OK;
  if (!st) reply_json(c, &b);
  buf_free(&b);
  return st;
}

int op_targets(struct opctx *c) {
  uint32_t v[3];
  struct buf b = {0};
  int r = dm_target_version("crypt", v);
  if (r < 0 && r != -ENOENT) return dm_fail(c, r, "list targets");
  if (r == 0) buf_printf(&b, "{\"crypt\":[%u,%u,%u]}", v[0], v[1], v[2]);
  else buf_printf(&b, "{\"crypt\":null}");
  reply_json(c, &b);
  buf_free(&b);
  return ST_OK;
}

int op_remove_empty(struct opctx *c) {
  struct dm_state ds;
  const char *name = c->req->name;
  int r = dm_state(name, &ds);
  if (r == -ENOTCONN) return dm_fail(c, r, "status");
  if (r == -ENXIO || r == -ENODEV) return fail(c, ST_NOT_FOUND, r, "no mapping named %s", name);
  if (r < 0) return dm_fail(c, r, "device-mapper status");
  if (ds.has_live_table) return fail(c, ST_EINVAL, -EINVAL, "%s has a table: it is not a half-created mapping (use CLOSE)", name);
  if (strncmp(ds.uuid, "CRYPT-", 6) != 0) return fail(c, ST_EINVAL, -EINVAL, "%s was not made by libcryptsetup (its dm UUID does not start CRYPT-)", name);
  /* By UUID: a mapping made under the same name since the check is not this one. */
  r = dm_remove_by_uuid(ds.uuid);
  if (r == -EBUSY) return fail(c, ST_BUSY, r, "%s is in use", name);
  if (r == -ENXIO) return fail(c, ST_NOT_FOUND, r, "%s is already gone", name);
  return r < 0 ? dm_fail(c, r, "remove") : ST_OK;
}
