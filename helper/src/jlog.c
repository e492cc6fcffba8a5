#include "jlog.h"

#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

void jlog(const char *event, const char *op, uint32_t id, int status, const char *message) {
  struct buf b = {0};
  struct timespec ts;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  buf_printf(&b, "{\"time\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\",\"event\":", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
  buf_json_str(&b, event);
  if (op) {
    buf_put(&b, ",\"op\":", 6);
    buf_json_str(&b, op);
    buf_printf(&b, ",\"id\":%u,\"status\":%d", id, status);
  }
  if (message && *message) {
    buf_put(&b, ",\"message\":", 11);
    buf_json_str(&b, message);
  }
  buf_put(&b, "}\n", 2);
  if (!b.oom) {
    pthread_mutex_lock(&lock);
    size_t off = 0;
    while (off < b.len) {
      ssize_t n = write(2, b.data + off, b.len - off);
      if (n <= 0) break;
      off += (size_t)n;
    }
    pthread_mutex_unlock(&lock);
  }
  buf_free(&b);
}
