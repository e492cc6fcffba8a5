/* Every check a request passes before an operation runs: which fields each op
 * takes, and each field's own rules. Pure (no I/O), so the fuzzer drives it. */
#ifndef PORTCULLIS_CHECK_H
#define PORTCULLIS_CHECK_H

#include "proto.h"

#define MSG_MAX 512

const char *op_name(uint16_t op);
const char *tag_name(uint16_t tag);

/* Fills req from a decoded frame. Returns 0, or -1 with an operator's message in
 * msg (never a field's value) and nothing left allocated. On a failure to lock
 * key memory *nomem is set. */
int request_check(const struct frame *f, struct request *req, char msg[MSG_MAX], int *nomem);
/* Wipes keys and frees every copy. */
void request_free(struct request *req);

/* The single-field rules, shared with tests of them. */
int check_path(const char *s);
int check_link(const char *s);
int check_name(const char *s);
int check_cipher(const char *s);
int parse_rdev(const char *s, dev_t *out);

#endif
