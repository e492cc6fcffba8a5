/* The single-field rules of docs/helper-protocol.md: PATH, LINK, NAME, CIPHER, RDEV. */
#include <string.h>
#include <sys/sysmacros.h>

#include "check.h"

static int in_set(char c, const char *extra) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (c && strchr(extra, c));
}

/* ^/dev/[A-Za-z0-9_./:+@-]+$ and no "..": no way out of /dev by a path component. */
int check_path(const char *s) {
  size_t n = strlen(s);
  if (n <= 5 || n > 4095 || strncmp(s, "/dev/", 5) != 0 || strstr(s, "..")) return -1;
  for (const char *p = s + 5; *p; p++)
    if (!in_set(*p, "_./:+@-")) return -1;
  return 0;
}

/* A symlink's own path: absolute, same characters, no ".."; where it may be is decided by --symlink-dir. */
int check_link(const char *s) {
  size_t n = strlen(s);
  if (n < 2 || n > 4095 || s[0] != '/' || strstr(s, "..") || s[n - 1] == '/') return -1;
  for (const char *p = s + 1; *p; p++)
    if (!in_set(*p, "_./:+@-")) return -1;
  return 0;
}

/* ^[A-Za-z0-9][A-Za-z0-9_.:+-]{0,126}$ */
int check_name(const char *s) {
  size_t n = strlen(s);
  if (n < 1 || n > 127 || !in_set(s[0], "")) return -1;
  for (const char *p = s + 1; *p; p++)
    if (!in_set(*p, "_.:+-")) return -1;
  return 0;
}

/* ^[a-z0-9]+-[a-z0-9:-]+$, at most 64 bytes */
int check_cipher(const char *s) {
  size_t n = strlen(s);
  const char *dash = strchr(s, '-');
  if (n > 64 || !dash || dash == s || dash[1] == '\0') return -1;
  for (const char *p = s; *p; p++) {
    int lower = (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9');
    if (!(lower || (p > dash && (*p == ':' || *p == '-')) || p == dash)) return -1;
  }
  return 0;
}

static int parse_dec(const char **p, unsigned long max, unsigned long *out) {
  unsigned long v = 0;
  const char *s = *p;
  if (*s < '0' || *s > '9') return -1;
  if (s[0] == '0' && s[1] >= '0' && s[1] <= '9') return -1; /* one spelling per number */
  for (; *s >= '0' && *s <= '9'; s++) {
    v = v * 10 + (unsigned long)(*s - '0');
    if (v > max) return -1;
  }
  *p = s;
  *out = v;
  return 0;
}

/* "major:minor" in decimal, within the kernel's 12-bit major and 20-bit minor. */
int parse_rdev(const char *s, dev_t *out) {
  unsigned long ma, mi;
  if (parse_dec(&s, 4095, &ma) || *s++ != ':' || parse_dec(&s, 1048575, &mi) || *s) return -1;
  *out = makedev(ma, mi);
  return 0;
}
