/*
 * sd_notify(3) without libsystemd: one datagram on an AF_UNIX socket. Node
 * has no unix datagram sockets, so this is the one thing here that JS could
 * not do itself. The JS side reads $NOTIFY_SOCKET and decides whether to
 * call; this file only parses the address and sends.
 */
#include "common.h"

#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* systemd reads at most PIPE_BUF bytes of a notification (NOTIFY_BUFFER_MAX); refuse more than that. */
#define STATE_MAX 4096

/* "/path" or "@abstract", as sd_notify accepts them; fills addr and its length. */
static bool parse_address(napi_env env, const char *text, size_t len, struct sockaddr_un *addr,
                          socklen_t *addr_len) {
  memset(addr, 0, sizeof *addr);
  addr->sun_family = AF_UNIX;
  if ((text[0] != '/' && text[0] != '@') || len < 2 || len >= sizeof addr->sun_path) {
    char message[256];
    snprintf(message, sizeof message,
             "NOTIFY_SOCKET \"%.100s%s\" is not an absolute path or an abstract '@' name of 2 to 107 bytes; "
             "not notifying",
             text, len > 100 ? "..." : "");
    napi_throw_error(env, E_NATIVE_NOTIFY_SOCKET, message);
    return false;
  }
  memcpy(addr->sun_path, text, len);
  /* An abstract name has a leading NUL and no terminating one: its length is exact. */
  if (text[0] == '@') {
    addr->sun_path[0] = '\0';
    *addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
  } else {
    *addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1);
  }
  return true;
}

napi_value notify_send(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  /* Larger than any usable address, so that a too-long one reaches parse_address() and its message. */
  char address[PATH_MAX + 1];
  char state[STATE_MAX + 1];
  size_t address_len, state_len;
  struct sockaddr_un addr;
  socklen_t addr_len;
  ssize_t sent;
  int fd, err;
  if (!get_args(env, info, 2, argv, "notify")) return NULL;
  if (!arg_string(env, argv[0], "notify", "address", address, sizeof address, &address_len)) return NULL;
  if (!arg_string(env, argv[1], "notify", "state", state, sizeof state, &state_len)) return NULL;
  if (!parse_address(env, address, address_len, &addr, &addr_len)) return NULL;

  fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    throw_errno(env, E_NATIVE_CALL_FAILED, "socket", errno, NULL);
    return NULL;
  }
  /* MSG_NOSIGNAL: a vanished receiver must give an error here, not SIGPIPE the daemon. */
  sent = sendto(fd, state, state_len, MSG_NOSIGNAL, (struct sockaddr *)&addr, addr_len);
  err = errno;
  (void)close(fd);
  if (sent < 0) {
    throw_errno(env, E_NATIVE_CALL_FAILED, "sendto", err, NULL);
    return NULL;
  }
  if ((size_t)sent != state_len) {
    throw_errno(env, E_NATIVE_CALL_FAILED, "sendto", EMSGSIZE, "sendto() sent a truncated notification");
    return NULL;
  }
  return NULL;
}
