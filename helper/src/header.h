/* HEADER's verdict: crypt_load and the header as JSON. Shared by the HEADER op
 * and the test-only header-verdict program (image files, no block device). */
#ifndef PORTCULLIS_HEADER_H
#define PORTCULLIS_HEADER_H

#include "ctx.h"

/* Loads a LUKS header from cd and appends its JSON to out; returns a status (NOT_LUKS with libcryptsetup's reason). */
int header_verdict(struct opctx *c, struct crypt_device *cd, struct buf *out);

#endif
