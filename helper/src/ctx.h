/* One operation's context: its request, its response, the error lines its own
 * libcryptsetup context logged, and the device descriptor it checked. */
#ifndef PORTCULLIS_CTX_H
#define PORTCULLIS_CTX_H

#include <libcryptsetup.h>
#include <sys/stat.h>

#include "buf.h"
#include "frame.h"
#include "proto.h"

struct opctx {
  struct request *req;
  struct response *resp;
  struct buf cslog; /* libcryptsetup's error lines, "; "-joined, NUL-terminated on use */
  char msg[512];
  int err;          /* negative errno for the ERRNO field, 0 = none */
  int devfd;        /* -1 until dev_open */
  char byfd[32];    /* "/proc/self/fd/N" once libcryptsetup has the device by descriptor, else "" */
  struct stat devst;
  const char *const *symlink_dirs;
};

typedef int (*op_handler)(struct opctx *c);

/* Sets the response's MESSAGE (printf) and returns status; libcryptsetup's lines are appended. */
int fail(struct opctx *c, int status, int err, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Maps a libcryptsetup/kernel return to a status: EPERM wrong key, ENOENT not found, and so on. */
int status_of(int r);
int fail_r(struct opctx *c, int r, const char *what);
/* A passphrase that opened nothing: -EPERM (no keyslot took it) or -ENOENT (no keyslot left), both WRONG_KEY. */
int is_wrong_key(int r);

/* crypt_init on the request's device (by its checked descriptor once dev_open ran) with this op's log callback. */
int ctx_crypt_init(struct opctx *c, struct crypt_device **cd);
int ctx_crypt_init_by_name(struct opctx *c, struct crypt_device **cd, const char *name);
void ctx_log_hook(struct opctx *c, struct crypt_device *cd);

/* Opens PATH (O_RDONLY|O_CLOEXEC|extra), requires a block device, and when RDEV was
 * given, that device. Returns 0 or a status (message set). */
int dev_open(struct opctx *c, int extra_flags);
/* dev_open for reading, refusing a suspended dm device (its I/O would wait until a resume). */
int open_for_read(struct opctx *c);
/* After libcryptsetup opened PATH itself: PATH must still name the device of our descriptor. */
int dev_recheck(struct opctx *c);
void ctx_done(struct opctx *c);

#endif

#ifndef PORTCULLIS_CTX_EXTRA
#define PORTCULLIS_CTX_EXTRA
/* dev_open, then crypt_init on PATH, then dev_recheck: the device libcryptsetup
 * opened by name is the one we checked (the window left is between here and
 * libcryptsetup's own later opens of PATH). */
int ctx_dev_crypt(struct opctx *c, struct crypt_device **cd);
void reply_json(struct opctx *c, struct buf *json);
void reply_slot(struct opctx *c, int slot);
#endif
