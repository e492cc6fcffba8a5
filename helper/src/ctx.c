#include "ctx.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/sysmacros.h>
#include <unistd.h>

int fail(struct opctx *c, int status, int err, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->msg, sizeof c->msg, fmt, ap);
  va_end(ap);
  c->err = err;
  return status;
}

int status_of(int r) {
  switch (-r) {
  case 0: return ST_OK;
  case EPERM: return ST_WRONG_KEY;
  case ENOENT: case ENODEV: case ENXIO: return ST_NOT_FOUND;
  case EBUSY: case EEXIST: return ST_BUSY;
  case EINVAL: return ST_EINVAL;
  case EIO: return ST_IO;
  case ENOMEM: return ST_NOMEM;
  default: return ST_FAILED;
  }
}

int fail_r(struct opctx *c, int r, const char *what) {
  return fail(c, status_of(r), r, "%s: %s", what, strerror(-r));
}

int is_wrong_key(int r) { return r == -EPERM || r == -ENOENT; }

static void on_log(int level, const char *msg, void *usr) {
  struct opctx *c = usr;
  if (level != CRYPT_LOG_ERROR || !msg) return;
  size_t n = strlen(msg);
  while (n && (msg[n - 1] == '\n' || msg[n - 1] == ' ')) n--;
  if (!n || c->cslog.len > 2048) return; /* enough for an operator; bounded */
  if (c->cslog.len) buf_put(&c->cslog, "; ", 2);
  /* The operator knows the device by the request's path, not by this thread's descriptor. */
  size_t k = strlen(c->byfd);
  const char *at = k ? memmem(msg, n, c->byfd, k) : NULL;
  if (at) {
    buf_put(&c->cslog, msg, (size_t)(at - msg));
    buf_put(&c->cslog, c->req->path, strlen(c->req->path));
    buf_put(&c->cslog, at + k, n - (size_t)(at - msg) - k);
  } else {
    buf_put(&c->cslog, msg, n);
  }
}

void ctx_log_hook(struct opctx *c, struct crypt_device *cd) { crypt_set_log_callback(cd, on_log, c); }

int ctx_crypt_init(struct opctx *c, struct crypt_device **cd) {
  /* libcryptsetup opens its device by name. Named by the descriptor already checked
   * (major:minor, not suspended), a path swapped after that check cannot redirect it:
   * /proc/self/fd/N reopens the very device this thread holds. */
  c->byfd[0] = '\0';
  if (c->devfd >= 0) snprintf(c->byfd, sizeof c->byfd, "/proc/self/fd/%d", c->devfd);
  int r = crypt_init(cd, c->byfd[0] ? c->byfd : c->req->path);
  if (r < 0) return fail_r(c, r, "cannot open the device for libcryptsetup");
  ctx_log_hook(c, *cd);
  return 0;
}

int ctx_crypt_init_by_name(struct opctx *c, struct crypt_device **cd, const char *name) {
  /* No per-context callback exists before the context: errors of the lookup itself come back as r. */
  int r = crypt_init_by_name(cd, name);
  if (r < 0) {
    if (r == -ENODEV || r == -ENOENT) return fail(c, ST_NOT_FOUND, r, "no mapping named %s", name);
    return fail_r(c, r, "cannot look up the mapping");
  }
  ctx_log_hook(c, *cd);
  return 0;
}

static int check_rdev(struct opctx *c, const struct stat *st) {
  if (!S_ISBLK(st->st_mode)) return fail(c, ST_EINVAL, -ENOTBLK, "%s is not a block device", c->req->path);
  if ((c->req->have & BIT(T_RDEV)) && st->st_rdev != c->req->rdev)
    return fail(c, ST_DEVICE_CHANGED, 0, "%s is now %u:%u, not the requested %u:%u", c->req->path, major(st->st_rdev),
                minor(st->st_rdev), major(c->req->rdev), minor(c->req->rdev));
  return 0;
}

int dev_open(struct opctx *c, int extra_flags) {
  /* O_NONBLOCK: a FIFO under /dev/shm must not hold the thread in open(); block devices ignore it. */
  c->devfd = open(c->req->path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | extra_flags);
  if (c->devfd < 0) {
    int e = errno;
    if (e == ENOENT || e == ENXIO || e == ENODEV) return fail(c, ST_NOT_FOUND, -e, "%s: %s", c->req->path, strerror(e));
    return fail(c, status_of(-e), -e, "cannot open %s: %s", c->req->path, strerror(e));
  }
  if (fstat(c->devfd, &c->devst) != 0) return fail(c, ST_IO, -errno, "cannot stat %s", c->req->path);
  int st = check_rdev(c, &c->devst);
  /* Reads (READ, SCAN_ZEROS) then block as usual. */
  if (!st && fcntl(c->devfd, F_SETFL, fcntl(c->devfd, F_GETFL) & ~O_NONBLOCK) != 0)
    return fail(c, ST_IO, -errno, "cannot set up the descriptor of %s", c->req->path);
  return st;
}

int dev_recheck(struct opctx *c) {
  struct stat st;
  if (stat(c->req->path, &st) != 0) return fail(c, ST_DEVICE_CHANGED, -errno, "%s vanished during the operation", c->req->path);
  if (!S_ISBLK(st.st_mode) || st.st_rdev != c->devst.st_rdev)
    return fail(c, ST_DEVICE_CHANGED, 0, "%s changed to another device during the operation", c->req->path);
  return 0;
}

void ctx_done(struct opctx *c) {
  if (c->devfd >= 0) close(c->devfd);
  c->devfd = -1;
  buf_free(&c->cslog);
}

/* A read of a suspended dm device blocks until it resumes: refuse it instead. */
static int suspended(const struct stat *st) {
  char p[64], v[4] = {0};
  snprintf(p, sizeof p, "/sys/dev/block/%u:%u/dm/suspended", major(st->st_rdev), minor(st->st_rdev));
  int fd = open(p, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0; /* not a dm device */
  ssize_t n = read(fd, v, sizeof v - 1);
  close(fd);
  return n > 0 && v[0] == '1';
}

int open_for_read(struct opctx *c) {
  int st = dev_open(c, 0);
  if (st) return st;
  if (suspended(&c->devst)) return fail(c, ST_SUSPENDED, -EAGAIN, "%s is a suspended device-mapper device", c->req->path);
  return 0;
}

int ctx_dev_crypt(struct opctx *c, struct crypt_device **cd) {
  /* Every libcryptsetup operation on a device reads it: on a suspended dm device that read
   * would wait, uninterruptibly, until a resume. Refused up front instead. */
  int st = open_for_read(c);
  if (st) return st;
  st = ctx_crypt_init(c, cd);
  if (st) return st;
  return dev_recheck(c);
}

void reply_json(struct opctx *c, struct buf *json) {
  resp_field(c->resp, T_JSON, json->data, (uint32_t)json->len);
}

void reply_slot(struct opctx *c, int slot) { resp_i32(c->resp, T_SLOT, slot); }
