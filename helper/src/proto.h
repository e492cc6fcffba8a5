/* The wire protocol's numbers (docs/helper-protocol.md) and the decoded request. */
#ifndef PORTCULLIS_PROTO_H
#define PORTCULLIS_PROTO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define PROTO_VERSION 1
#define KIND_REQUEST 1
#define KIND_RESPONSE 2
/* A request's header is version, kind, op, id: a HELLO has nothing else. */
#define REQ_HEADER_LEN 8u
#define RESP_HEADER_LEN 12u
#define FRAME_MAX (17u * 1024u * 1024u)
#define MAX_FIELDS 64u
#define MAX_IN_FLIGHT 64
#define KEY_MAX 8192u

enum tag {
  T_PATH = 1, T_NAME, T_RDEV, T_KEY, T_NEW_KEY, T_TYPE, T_CIPHER, T_KEY_BITS, T_OFFSET,
  T_LENGTH, T_FLAGS, T_PBKDF, T_ITERATIONS, T_MEMORY_KIB, T_LABEL, T_TOKEN_JSON, T_SLOT, T_LINK,
  T_REQ_LAST = T_LINK,
  T_MESSAGE = 100, T_ERRNO = 101, T_DATA = 102, T_JSON = 103,
};
#define BIT(t) (1u << (t))

enum op {
  OP_HELLO = 1, OP_HEADER, OP_OPEN, OP_CLOSE, OP_RESIZE, OP_FORMAT, OP_KEY_TEST, OP_KEY_ADD,
  OP_KEY_CHANGE, OP_KEY_REMOVE, OP_ERASE, OP_TOKEN_SET, OP_STATUS, OP_LIST, OP_TARGETS,
  OP_REMOVE_EMPTY, OP_READ, OP_SCAN_ZEROS, OP_SYMLINK, OP_PROBE,
  OP_LAST = OP_PROBE,
};

enum status {
  ST_OK = 0, ST_EINVAL, ST_NOT_FOUND, ST_DEVICE_CHANGED, ST_WRONG_KEY, ST_BUSY, ST_NOT_LUKS,
  ST_IO, ST_NOMEM, ST_DM_UNAVAILABLE, ST_SUSPENDED, ST_FAILED, ST_TOO_MANY,
};

/* FLAGS bits */
#define FL_READONLY (1u << 0)
#define FL_DISCARDS (1u << 1)
#define FL_DEFERRED (1u << 2)
#define FL_NO_READ_WQ (1u << 3)
#define FL_NO_WRITE_WQ (1u << 4)
#define FL_ALL 0x1fu

#define READ_MAX (16u * 1024u * 1024u)
#define SCAN_MAX (64ull * 1024u * 1024u)

struct field {
  uint16_t tag;
  uint32_t len;
  const uint8_t *val; /* points into the frame body */
};

struct frame {
  uint16_t op;
  uint32_t id;
  size_t nfields;
  struct field fields[MAX_FIELDS];
};

struct secbuf;

/* A request after every check: owned copies, keys in locked memory. */
struct request {
  uint16_t op;
  uint32_t id;
  uint32_t have; /* BIT(tag) for each field present */
  char *path, *name, *type, *cipher, *pbkdf, *label, *token_json, *link;
  dev_t rdev;
  struct secbuf *key, *new_key;
  uint32_t key_bits, flags, iterations, memory_kib;
  uint64_t offset, length;
  int32_t slot;
};

#endif
