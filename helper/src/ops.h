/* The operations, one handler each; ops.c maps op numbers to them. */
#ifndef PORTCULLIS_OPS_H
#define PORTCULLIS_OPS_H

#include "ctx.h"

int op_hello(struct opctx *c);
int op_header(struct opctx *c);
int op_open(struct opctx *c);
int op_close(struct opctx *c);
int op_resize(struct opctx *c);
int op_format(struct opctx *c);
int op_key_test(struct opctx *c);
int op_key_add(struct opctx *c);
int op_key_change(struct opctx *c);
int op_key_remove(struct opctx *c);
int op_erase(struct opctx *c);
int op_token_set(struct opctx *c);
int op_status(struct opctx *c);
int op_list(struct opctx *c);
int op_targets(struct opctx *c);
int op_remove_empty(struct opctx *c);
int op_read(struct opctx *c);
int op_scan_zeros(struct opctx *c);
int op_symlink(struct opctx *c);
int op_probe(struct opctx *c);

/* Runs req's op; fills resp (fields, then status and MESSAGE/ERRNO on failure). */
void op_run(struct request *req, struct response *resp, const char *const *symlink_dirs);

#endif
