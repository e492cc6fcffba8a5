/* Logging: one JSON object per line on stderr, written whole. Callers pass
 * no key bytes; messages come from checks and libcryptsetup's error lines. */
#ifndef PORTCULLIS_JLOG_H
#define PORTCULLIS_JLOG_H

#include <stdint.h>

/* event and the optional strings are JSON-escaped; op may be NULL. */
void jlog(const char *event, const char *op, uint32_t id, int status, const char *message);

#endif
