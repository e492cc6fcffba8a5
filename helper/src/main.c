/* portcullis-helper: the privileged half of portcullis (docs/helper-protocol.md). */
#include <errno.h>
#include <libcryptsetup.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "jlog.h"
#include "server.h"

#define MAX_DIRS 16

static const char USAGE[] =
  "usage: portcullis-helper (--fd N | --stdio | --listen [--allow-uid UID | --allow-user NAME]) [--symlink-dir DIR]...\n"
  "  --fd N           serve the connected stream on descriptor N; exit when the peer hangs up\n"
  "  --stdio          requests on descriptor 0, responses on descriptor 1 (tests)\n"
  "  --listen         systemd socket activation: accept on descriptor 3, one thread per connection\n"
  "  --allow-uid UID  with --listen: the one non-root uid that may connect (SO_PEERCRED)\n"
  "  --allow-user NAME  the same, by name, looked up once at start (the unit names portcullis)\n"
  "  --symlink-dir D  a directory SYMLINK may place links in (repeatable; none: SYMLINK refused)\n"
  "Protocol: docs/helper-protocol.md. Logs: one JSON object per line on stderr.\n"
  "Exit status: 0 the peer hung up, 2 it sent a malformed frame, 64 bad arguments.\n";

static const char *dirs[MAX_DIRS + 1];
static long allow_uid = -1;

/* libcryptsetup messages outside any operation's context: logged, never key bytes. */
static void global_log(int level, const char *msg, void *usr) {
  (void)usr;
  if (level != CRYPT_LOG_ERROR || !msg) return;
  char line[512];
  snprintf(line, sizeof line, "%s", msg);
  line[strcspn(line, "\n")] = '\0';
  jlog("libcryptsetup", NULL, 0, 0, line);
}

static long number(const char *s) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || !*s || *end || v < 0 || v > 0x7fffffff) return -1;
  return v;
}

struct listen_conn { int fd; };

static void *serve_one(void *arg) {
  int fd = ((struct listen_conn *)arg)->fd;
  free(arg);
  enum conn_end e = serve(fd, fd, dirs);
  jlog(e == END_HANGUP ? "connection_closed" : "connection_dropped", NULL, 0, 0, NULL);
  close(fd);
  return NULL;
}

static int listen_loop(void) {
  const char *fds = getenv("LISTEN_FDS"), *pid = getenv("LISTEN_PID");
  if (!fds || strcmp(fds, "1") != 0 || !pid || number(pid) != getpid()) {
    fprintf(stderr, "portcullis-helper: --listen needs systemd socket activation (LISTEN_FDS=1 for this pid)\n");
    return 64;
  }
  for (;;) {
    int fd = accept4(3, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      jlog("accept_failed", NULL, 0, 0, strerror(errno));
      return 1;
    }
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || (cred.uid != 0 && (long)cred.uid != allow_uid)) {
      jlog("peer_refused", NULL, 0, 0, "the peer is neither root nor --allow-uid");
      close(fd);
      continue;
    }
    struct listen_conn *lc = malloc(sizeof *lc);
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (!lc || (lc->fd = fd, pthread_create(&t, &attr, serve_one, lc) != 0)) {
      free(lc);
      close(fd);
    }
    pthread_attr_destroy(&attr);
  }
}

int main(int argc, char **argv) {
  long fd = -1;
  int stdio = 0, listen = 0;
  size_t ndirs = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "--help") == 0) { fputs(USAGE, stdout); return 0; }
    else if (strcmp(a, "--stdio") == 0) stdio = 1;
    else if (strcmp(a, "--listen") == 0) listen = 1;
    else if (strcmp(a, "--fd") == 0 && v) { fd = number(v); i++; if (fd < 0) goto usage; }
    else if (strcmp(a, "--allow-uid") == 0 && v && allow_uid < 0) { allow_uid = number(v); i++; if (allow_uid < 0) goto usage; }
    else if (strcmp(a, "--allow-user") == 0 && v && allow_uid < 0) {
      /* Resolved now, while /etc/passwd is certainly readable; a user that does not exist is a unit's mistake to report, not to serve around. */
      struct passwd *pw = getpwnam(v);
      if (!pw) { fprintf(stderr, "portcullis-helper: --allow-user %s: no such user (systemd-sysusers creates portcullis)\n", v); return 64; }
      allow_uid = (long)pw->pw_uid; i++;
      if (allow_uid == 0) goto usage;
    }
    else if (strcmp(a, "--symlink-dir") == 0 && v && v[0] == '/' && ndirs < MAX_DIRS) { dirs[ndirs++] = v; i++; }
    else goto usage;
  }
  if ((fd >= 0) + stdio + listen != 1 || (allow_uid >= 0 && !listen)) goto usage;

  /* No core dump, no ptrace by other users: key bytes pass through this process. */
  prctl(PR_SET_DUMPABLE, 0);
  signal(SIGPIPE, SIG_IGN);
  umask(077);
  crypt_set_log_callback(NULL, global_log, NULL);
  jlog("start", NULL, 0, 0, stdio ? "stdio" : listen ? "listen" : "fd");
  if (listen) return listen_loop();
  int in = stdio ? 0 : (int)fd, out = stdio ? 1 : (int)fd;
  enum conn_end e = serve(in, out, dirs);
  jlog(e == END_HANGUP ? "exit" : "exit_malformed", NULL, 0, 0, NULL);
  return e == END_HANGUP ? 0 : 2;
usage:
  fputs(USAGE, stderr);
  return 64;
}
