#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"
#include "frame.h"
#include "jlog.h"
#include "ops.h"

/* Across every connection: the protocol's limit on operations running at once. */
static atomic_int in_flight;

struct conn {
  int in_fd, out_fd;
  int dead; /* under wlock: responses are dropped once the connection is closed */
  pthread_mutex_t wlock;
  pthread_mutex_t lock;
  pthread_cond_t idle;
  int ops; /* operations of this connection still running */
  const char *const *symlink_dirs;
};

struct job {
  struct conn *conn;
  struct request req;
};

static void send_response(struct conn *c, struct response *r) {
  pthread_mutex_lock(&c->wlock);
  size_t off = 0;
  while (!c->dead && off < r->b.len) {
    ssize_t n = write(c->out_fd, r->b.data + off, r->b.len - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) { c->dead = 1; break; }
    off += (size_t)n;
  }
  pthread_mutex_unlock(&c->wlock);
}

/* Finishes and sends resp, logs the outcome, frees it. */
static void answer(struct conn *c, struct response *resp, uint16_t op, uint32_t id, int status) {
  if (resp_finish(resp, status) != 0) {
    buf_free(&resp->b);
    resp_begin(resp, op, id);
    resp_str(resp, T_MESSAGE, "the answer did not fit in memory or in a frame");
    resp_finish(resp, ST_NOMEM);
    status = ST_NOMEM;
  }
  send_response(c, resp);
  const char *name = op_name(op);
  char opbuf[16];
  if (!name) { snprintf(opbuf, sizeof opbuf, "op%u", op); name = opbuf; }
  jlog(status == ST_OK ? "op_done" : "op_failed", name, id, status, NULL);
  buf_free(&resp->b);
}

static void answer_error(struct conn *c, uint16_t op, uint32_t id, int status, const char *msg) {
  struct response resp;
  resp_begin(&resp, op, id);
  resp_str(&resp, T_MESSAGE, msg);
  answer(c, &resp, op, id, status);
}

static void *run_job(void *arg) {
  struct job *j = arg;
  struct response resp;
  resp_begin(&resp, j->req.op, j->req.id);
  op_run(&j->req, &resp, j->conn->symlink_dirs);
  uint16_t op = j->req.op;
  uint32_t id = j->req.id;
  request_free(&j->req); /* keys wiped before the answer goes out */
  answer(j->conn, &resp, op, id, resp.status);
  struct conn *c = j->conn;
  free(j);
  atomic_fetch_sub(&in_flight, 1);
  pthread_mutex_lock(&c->lock);
  if (--c->ops == 0) pthread_cond_broadcast(&c->idle);
  pthread_mutex_unlock(&c->lock);
  return NULL;
}

/* 1 = got n bytes, 0 = clean EOF before the first byte, -1 = EOF or error midway. */
static int read_full(int fd, uint8_t *p, size_t n) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, p + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -1;
    if (r == 0) return got == 0 ? 0 : -1;
    got += (size_t)r;
  }
  return 1;
}

static void start(struct conn *c, struct request *req) {
  if (atomic_fetch_add(&in_flight, 1) >= MAX_IN_FLIGHT) {
    atomic_fetch_sub(&in_flight, 1);
    uint16_t op = req->op;
    uint32_t id = req->id;
    request_free(req);
    answer_error(c, op, id, ST_TOO_MANY, "the helper already runs 64 operations; retry later");
    return;
  }
  struct job *j = malloc(sizeof *j);
  pthread_t t;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  if (j) {
    j->conn = c;
    j->req = *req;
    pthread_mutex_lock(&c->lock);
    c->ops++;
    pthread_mutex_unlock(&c->lock);
    if (pthread_create(&t, &attr, run_job, j) == 0) { pthread_attr_destroy(&attr); return; }
    pthread_mutex_lock(&c->lock);
    c->ops--;
    pthread_mutex_unlock(&c->lock);
    free(j);
  }
  pthread_attr_destroy(&attr);
  atomic_fetch_sub(&in_flight, 1);
  uint16_t op = req->op;
  uint32_t id = req->id;
  request_free(req);
  answer_error(c, op, id, ST_NOMEM, "cannot start a thread for the operation");
}

/* One frame: 1 served, 0 hang-up, -1 malformed (reason logged). */
static int one_frame(struct conn *c) {
  uint8_t lenb[4];
  int r = read_full(c->in_fd, lenb, 4);
  if (r <= 0) {
    if (r < 0) jlog("malformed", NULL, 0, 0, "the stream ended inside a length prefix");
    return r;
  }
  uint32_t len = get_u32(lenb);
  if (!frame_length_ok(len)) {
    jlog("malformed", NULL, 0, 0, len < REQ_HEADER_LEN ? "frame length below the header size" : "frame length above 17 MiB");
    return -1;
  }
  uint8_t *body = malloc(len);
  if (!body) { jlog("malformed", NULL, 0, 0, "no memory for the frame"); return -1; }
  int rc = 1;
  static __thread struct frame f; /* 1 KiB of fields: off the stack */
  if (read_full(c->in_fd, body, len) != 1) {
    jlog("malformed", NULL, 0, 0, "the stream ended inside a frame");
    rc = -1;
  } else {
    enum frame_error fe = frame_decode(body, len, &f);
    if (fe != FE_OK) {
      jlog("malformed", NULL, 0, 0, frame_error_text(fe));
      rc = -1;
    } else {
      struct request req;
      char msg[MSG_MAX];
      int nomem;
      if (request_check(&f, &req, msg, &nomem) != 0) {
        /* The frame buffer may hold a key: wiped before anything else happens. */
        explicit_bzero(body, len);
        answer_error(c, f.op, f.id, nomem ? ST_NOMEM : ST_EINVAL, msg);
      } else {
        explicit_bzero(body, len);
        start(c, &req);
      }
    }
  }
  explicit_bzero(body, len);
  free(body);
  return rc;
}

enum conn_end serve(int in_fd, int out_fd, const char *const *symlink_dirs) {
  struct conn c = {.in_fd = in_fd, .out_fd = out_fd, .symlink_dirs = symlink_dirs};
  pthread_mutex_init(&c.wlock, NULL);
  pthread_mutex_init(&c.lock, NULL);
  pthread_cond_init(&c.idle, NULL);
  int r;
  while ((r = one_frame(&c)) == 1) {}
  if (r < 0) {
    /* Malformed: no more answers on this stream; the peer sees it closed now,
     * while operations already running finish (a half-written header is worse). */
    pthread_mutex_lock(&c.wlock);
    c.dead = 1;
    shutdown(out_fd, SHUT_RDWR);
    int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (devnull >= 0) {
      /* Not close(): a descriptor number freed under running threads could be reused by their opens. */
      dup2(devnull, in_fd);
      if (out_fd != in_fd) dup2(devnull, out_fd);
      close(devnull);
    }
    pthread_mutex_unlock(&c.wlock);
  }
  pthread_mutex_lock(&c.lock);
  while (c.ops > 0) pthread_cond_wait(&c.idle, &c.lock);
  pthread_mutex_unlock(&c.lock);
  pthread_cond_destroy(&c.idle);
  pthread_mutex_destroy(&c.lock);
  pthread_mutex_destroy(&c.wlock);
  return r < 0 ? END_MALFORMED : END_HANGUP;
}
