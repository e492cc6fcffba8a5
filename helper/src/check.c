#include "check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysmacros.h>

#include "secmem.h"

static const char *const OP_NAMES[] = {
  [OP_HELLO] = "HELLO", [OP_HEADER] = "HEADER", [OP_OPEN] = "OPEN", [OP_CLOSE] = "CLOSE",
  [OP_RESIZE] = "RESIZE", [OP_FORMAT] = "FORMAT", [OP_KEY_TEST] = "KEY_TEST", [OP_KEY_ADD] = "KEY_ADD",
  [OP_KEY_CHANGE] = "KEY_CHANGE", [OP_KEY_REMOVE] = "KEY_REMOVE", [OP_ERASE] = "ERASE",
  [OP_TOKEN_SET] = "TOKEN_SET", [OP_STATUS] = "STATUS", [OP_LIST] = "LIST", [OP_TARGETS] = "TARGETS",
  [OP_REMOVE_EMPTY] = "REMOVE_EMPTY", [OP_READ] = "READ", [OP_SCAN_ZEROS] = "SCAN_ZEROS", [OP_SYMLINK] = "SYMLINK", [OP_PROBE] = "PROBE",
};

static const char *const TAG_NAMES[] = {
  [T_PATH] = "PATH", [T_NAME] = "NAME", [T_RDEV] = "RDEV", [T_KEY] = "KEY", [T_NEW_KEY] = "NEW_KEY",
  [T_TYPE] = "TYPE", [T_CIPHER] = "CIPHER", [T_KEY_BITS] = "KEY_BITS", [T_OFFSET] = "OFFSET",
  [T_LENGTH] = "LENGTH", [T_FLAGS] = "FLAGS", [T_PBKDF] = "PBKDF", [T_ITERATIONS] = "ITERATIONS",
  [T_MEMORY_KIB] = "MEMORY_KIB", [T_LABEL] = "LABEL", [T_TOKEN_JSON] = "TOKEN_JSON", [T_SLOT] = "SLOT", [T_LINK] = "LINK",
};

const char *op_name(uint16_t op) { return op >= 1 && op <= OP_LAST ? OP_NAMES[op] : NULL; }
const char *tag_name(uint16_t tag) { return tag >= 1 && tag <= T_REQ_LAST ? TAG_NAMES[tag] : NULL; }

#define PBKDF_OPT (BIT(T_PBKDF) | BIT(T_ITERATIONS) | BIT(T_MEMORY_KIB))
#define DEV (BIT(T_PATH) | BIT(T_RDEV))
static const struct { uint32_t required, optional; } SPEC[] = {
  [OP_HELLO] = {0, 0},
  [OP_HEADER] = {BIT(T_PATH), BIT(T_RDEV)},
  [OP_OPEN] = {BIT(T_TYPE) | DEV | BIT(T_NAME) | BIT(T_KEY), BIT(T_FLAGS) | BIT(T_CIPHER) | BIT(T_KEY_BITS) | BIT(T_OFFSET)},
  [OP_CLOSE] = {BIT(T_NAME), BIT(T_FLAGS)},
  [OP_RESIZE] = {BIT(T_NAME), BIT(T_KEY) | BIT(T_LENGTH)},
  [OP_FORMAT] = {BIT(T_TYPE) | DEV | BIT(T_KEY),
                 BIT(T_CIPHER) | BIT(T_KEY_BITS) | PBKDF_OPT | BIT(T_LABEL) | BIT(T_TOKEN_JSON)},
  [OP_KEY_TEST] = {DEV | BIT(T_KEY), 0},
  [OP_KEY_ADD] = {DEV | BIT(T_KEY) | BIT(T_NEW_KEY), PBKDF_OPT},
  [OP_KEY_CHANGE] = {DEV | BIT(T_KEY) | BIT(T_NEW_KEY), PBKDF_OPT},
  [OP_KEY_REMOVE] = {DEV | BIT(T_SLOT), 0},
  [OP_ERASE] = {DEV, 0},
  [OP_TOKEN_SET] = {DEV | BIT(T_TOKEN_JSON), BIT(T_SLOT)},
  [OP_STATUS] = {BIT(T_NAME), 0},
  [OP_LIST] = {0, 0},
  [OP_TARGETS] = {0, 0},
  [OP_REMOVE_EMPTY] = {BIT(T_NAME), 0},
  [OP_READ] = {BIT(T_PATH) | BIT(T_OFFSET) | BIT(T_LENGTH), BIT(T_RDEV)},
  [OP_SCAN_ZEROS] = {BIT(T_PATH) | BIT(T_LENGTH), BIT(T_RDEV)},
  [OP_SYMLINK] = {BIT(T_LINK) | BIT(T_PATH), 0},
  [OP_PROBE] = {BIT(T_PATH), BIT(T_RDEV)},
};

static int is_one_of(const char *s, const char *const *set) {
  for (; *set; set++)
    if (strcmp(s, *set) == 0) return 1;
  return 0;
}

#define FAIL(...) do { snprintf(msg, MSG_MAX, __VA_ARGS__); goto fail; } while (0)

static uint32_t le32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* A string field as a NUL-terminated copy, or NULL when it holds a NUL or is not UTF-8-clean ASCII/UTF-8. */
static char *dup_str(const struct field *f) {
  if (memchr(f->val, '\0', f->len)) return NULL;
  char *s = malloc((size_t)f->len + 1);
  if (!s) return NULL;
  memcpy(s, f->val, f->len);
  s[f->len] = '\0';
  return s;
}

static int printable(const char *s) {
  for (; *s; s++)
    if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e) return 0;
  return 1;
}

static const char *const TYPES[] = {"luks1", "luks2", "plain", NULL};
static const char *const PBKDFS[] = {"pbkdf2", "argon2i", "argon2id", "default", NULL};

/* The per-field rule; returns 0 or fills msg. */
static int one_field(const struct field *f, struct request *r, char *msg, int *nomem) {
  const char *name = tag_name(f->tag);
  char **str = NULL;
  switch (f->tag) {
  case T_PATH: str = &r->path; break;
  case T_NAME: str = &r->name; break;
  case T_TYPE: str = &r->type; break;
  case T_CIPHER: str = &r->cipher; break;
  case T_PBKDF: str = &r->pbkdf; break;
  case T_LABEL: str = &r->label; break;
  case T_TOKEN_JSON: str = &r->token_json; break;
  case T_LINK: str = &r->link; break;
  default: break;
  }
  if (str || f->tag == T_RDEV) {
    if (f->len > 16384) FAIL("field %s is too long (%u bytes)", name, f->len);
    char *s = dup_str(f);
    if (!s) FAIL("field %s holds a NUL byte or memory ran out", name);
    int bad = 0;
    switch (f->tag) {
    case T_PATH: bad = check_path(s); break;
    case T_LINK: bad = check_link(s); break;
    case T_NAME: bad = check_name(s); break;
    case T_TYPE: bad = !is_one_of(s, TYPES); break;
    case T_CIPHER: bad = check_cipher(s); break;
    case T_PBKDF: bad = !is_one_of(s, PBKDFS); break;
    case T_LABEL: bad = strlen(s) > 47 || !printable(s); break;
    case T_TOKEN_JSON: bad = f->len == 0; break;
    case T_RDEV: bad = parse_rdev(s, &r->rdev); break;
    }
    if (f->tag == T_RDEV) free(s);
    else *str = s;
    if (bad) {
      static const char *const why[] = {
        [T_PATH] = "must be /dev/ followed by [A-Za-z0-9_./:+@-], without \"..\"",
        [T_LINK] = "must be an absolute path of [A-Za-z0-9_./:+@-], without \"..\"",
        [T_NAME] = "must match ^[A-Za-z0-9][A-Za-z0-9_.:+-]{0,126}$",
        [T_TYPE] = "must be luks1, luks2 or plain",
        [T_CIPHER] = "must be cipher-mode such as aes-xts-plain64, at most 64 bytes",
        [T_PBKDF] = "must be pbkdf2, argon2i, argon2id or default",
        [T_LABEL] = "must be at most 47 printable ASCII bytes",
        [T_TOKEN_JSON] = "must not be empty",
        [T_RDEV] = "must be major:minor in decimal",
      };
      FAIL("field %s %s", name, why[f->tag]);
    }
    return 0;
  }
  switch (f->tag) {
  case T_KEY:
  case T_NEW_KEY: {
    if (f->len < 1 || f->len > KEY_MAX) FAIL("field %s must be 1..%u bytes, not %u", name, KEY_MAX, f->len);
    struct secbuf *k = secbuf_copy(f->val, f->len);
    if (!k) { *nomem = 1; FAIL("cannot lock memory for field %s (RLIMIT_MEMLOCK?)", name); }
    if (f->tag == T_KEY) r->key = k;
    else r->new_key = k;
    return 0;
  }
  case T_KEY_BITS: case T_FLAGS: case T_ITERATIONS: case T_MEMORY_KIB: case T_SLOT: {
    if (f->len != 4) FAIL("field %s must be 4 bytes, not %u", name, f->len);
    uint32_t v = le32(f->val);
    if (f->tag == T_KEY_BITS) {
      if (v < 128 || v > 1024 || v % 8) FAIL("field KEY_BITS must be 128..1024 and a multiple of 8, not %u", v);
      r->key_bits = v;
    } else if (f->tag == T_FLAGS) {
      if (v & ~FL_ALL) FAIL("field FLAGS has unknown bits 0x%x", v & ~FL_ALL);
      r->flags = v;
    } else if (f->tag == T_ITERATIONS) r->iterations = v;
    else if (f->tag == T_MEMORY_KIB) r->memory_kib = v;
    else {
      if ((int32_t)v < -1) FAIL("field SLOT must be -1 or a slot number, not %d", (int32_t)v);
      r->slot = (int32_t)v;
    }
    return 0;
  }
  case T_OFFSET: case T_LENGTH: {
    if (f->len != 8) FAIL("field %s must be 8 bytes, not %u", name, f->len);
    uint64_t v = (uint64_t)le32(f->val) | (uint64_t)le32(f->val + 4) << 32;
    if (v > INT64_MAX) FAIL("field %s is beyond any device (%llu)", name, (unsigned long long)v);
    if (f->tag == T_OFFSET) r->offset = v;
    else r->length = v;
    return 0;
  }
  }
  FAIL("field tag %u is not a request field", f->tag);
fail:
  return -1;
}

/* The rules that tie fields together, per op. */
static int cross_checks(struct request *r, char *msg) {
  int plain = r->type && strcmp(r->type, "plain") == 0;
  int luks1 = r->type && strcmp(r->type, "luks1") == 0;
  switch (r->op) {
  case OP_OPEN:
    if (!plain && (r->have & (BIT(T_CIPHER) | BIT(T_KEY_BITS) | BIT(T_OFFSET))))
      FAIL("CIPHER, KEY_BITS and OFFSET are for TYPE plain only (LUKS reads them from its header)");
    if (r->flags & FL_DEFERRED) FAIL("FLAGS bit 2 (deferred) is for CLOSE only");
    if (plain && r->offset % 512) FAIL("OFFSET must be a multiple of 512 bytes");
    break;
  case OP_CLOSE:
    if (r->flags & ~FL_DEFERRED) FAIL("CLOSE takes only FLAGS bit 2 (deferred)");
    break;
  case OP_FORMAT:
    if (plain) FAIL("FORMAT takes TYPE luks1 or luks2 (plain has no header)");
    if (luks1 && (r->have & (BIT(T_LABEL) | BIT(T_TOKEN_JSON)))) FAIL("LABEL and TOKEN_JSON need TYPE luks2");
    if (luks1 && r->pbkdf && strncmp(r->pbkdf, "argon2", 6) == 0) FAIL("LUKS1 keyslots take PBKDF pbkdf2 only");
    break;
  case OP_KEY_REMOVE:
    if (r->slot < 0) FAIL("KEY_REMOVE needs a SLOT number, not -1");
    break;
  case OP_READ:
    if (r->length > READ_MAX) FAIL("LENGTH must be at most %u bytes for READ", READ_MAX);
    if (r->offset > INT64_MAX - r->length) FAIL("OFFSET + LENGTH is beyond any device");
    break;
  case OP_SCAN_ZEROS:
    if (r->length > SCAN_MAX) FAIL("LENGTH must be at most %llu bytes for SCAN_ZEROS", (unsigned long long)SCAN_MAX);
    break;
  }
  if (r->have & BIT(T_TOKEN_JSON) && strlen(r->token_json) > 16384) FAIL("TOKEN_JSON must be at most 16 KiB");
  return 0;
fail:
  return -1;
}

int request_check(const struct frame *f, struct request *req, char msg[MSG_MAX], int *nomem) {
  memset(req, 0, sizeof *req);
  req->op = f->op;
  req->id = f->id;
  req->slot = -1;
  *nomem = 0;
  msg[0] = '\0';
  if (!op_name(f->op)) FAIL("unknown op %u", f->op);
  uint32_t allowed = SPEC[f->op].required | SPEC[f->op].optional;
  for (size_t i = 0; i < f->nfields; i++) {
    const struct field *fl = &f->fields[i];
    if (fl->tag > T_REQ_LAST || fl->tag == 0 || !(allowed & BIT(fl->tag))) {
      if (tag_name(fl->tag)) FAIL("%s does not take field %s", op_name(f->op), tag_name(fl->tag));
      FAIL("%s does not take field tag %u", op_name(f->op), fl->tag);
    }
    req->have |= BIT(fl->tag);
    if (one_field(fl, req, msg, nomem)) goto fail_kept;
  }
  uint32_t missing = SPEC[f->op].required & ~req->have;
  if (missing) {
    for (uint16_t t = 1; t <= T_REQ_LAST; t++)
      if (missing & BIT(t)) FAIL("%s needs field %s", op_name(f->op), tag_name(t));
  }
  if (cross_checks(req, msg)) goto fail_kept;
  return 0;
fail:
fail_kept:
  request_free(req);
  return -1;
}

void request_free(struct request *r) {
  free(r->path); free(r->name); free(r->type); free(r->cipher);
  free(r->pbkdf); free(r->label); free(r->token_json); free(r->link);
  secbuf_free(r->key);
  secbuf_free(r->new_key);
  uint16_t op = r->op;
  uint32_t id = r->id;
  memset(r, 0, sizeof *r);
  r->op = op;
  r->id = id;
}
