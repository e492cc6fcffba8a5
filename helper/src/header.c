#include "header.h"

#include <errno.h>
#include <string.h>

static void keyslots_json(struct crypt_device *cd, const char *type, struct buf *b) {
  buf_put(b, "[", 1);
  int max = crypt_keyslot_max(type), first = 1;
  for (int s = 0; s < max; s++) {
    crypt_keyslot_info ki = crypt_keyslot_status(cd, s);
    const char *state = ki == CRYPT_SLOT_ACTIVE || ki == CRYPT_SLOT_ACTIVE_LAST ? "active"
                        : ki == CRYPT_SLOT_UNBOUND                           ? "unbound"
                                                                             : NULL;
    if (!state) continue;
    buf_printf(b, "%s{\"slot\":%d,\"state\":\"%s\"", first ? "" : ",", s, state);
    first = 0;
    struct crypt_pbkdf_type pbkdf;
    if (crypt_keyslot_get_pbkdf(cd, s, &pbkdf) == 0 && pbkdf.type) {
      buf_put(b, ",\"pbkdf\":", 9);
      buf_json_str(b, pbkdf.type);
      buf_printf(b, ",\"iterations\":%u", pbkdf.iterations);
      if (strncmp(pbkdf.type, "argon2", 6) == 0) buf_printf(b, ",\"memory_kib\":%u", pbkdf.max_memory_kb);
    }
    buf_put(b, "}", 1);
  }
  buf_put(b, "]", 1);
}

static void tokens_json(struct crypt_device *cd, const char *type, struct buf *b) {
  buf_put(b, "[", 1);
  if (strcmp(type, CRYPT_LUKS2) == 0) {
    int max = crypt_token_max(type), first = 1;
    for (int t = 0; t < max; t++) {
      const char *json = NULL;
      if (crypt_token_json_get(cd, t, &json) < 0 || !json) continue;
      buf_printf(b, "%s{\"id\":%d,\"json\":", first ? "" : ",", t);
      buf_json_str(b, json);
      buf_put(b, "}", 1);
      first = 0;
    }
  }
  buf_put(b, "]", 1);
}

int header_verdict(struct opctx *c, struct crypt_device *cd, struct buf *out) {
  int r = crypt_load(cd, CRYPT_LUKS, NULL);
  if (r < 0) {
    if (r == -ENOMEM) return fail(c, ST_NOMEM, r, "out of memory reading the header");
    if (r == -EIO) return fail(c, ST_IO, r, "I/O error reading the header");
    return fail(c, ST_NOT_LUKS, r, "no valid LUKS header (%s)", strerror(-r));
  }
  const char *type = crypt_get_type(cd);
  const char *uuid = crypt_get_uuid(cd), *cipher = crypt_get_cipher(cd), *mode = crypt_get_cipher_mode(cd);
  buf_put(out, "{\"type\":", 8);
  buf_json_str(out, strcmp(type, CRYPT_LUKS1) == 0 ? "LUKS1" : "LUKS2");
  buf_put(out, ",\"uuid\":", 8);
  buf_json_str(out, uuid ? uuid : "");
  buf_put(out, ",\"cipher\":", 10);
  buf_json_str(out, cipher ? cipher : "");
  buf_put(out, ",\"cipher_mode\":", 15);
  buf_json_str(out, mode ? mode : "");
  buf_printf(out, ",\"key_bits\":%d,\"data_offset\":%llu", crypt_get_volume_key_size(cd) * 8,
             (unsigned long long)crypt_get_data_offset(cd) * 512ull);
  const char *label = strcmp(type, CRYPT_LUKS2) == 0 ? crypt_get_label(cd) : NULL;
  if (label && *label) {
    buf_put(out, ",\"label\":", 9);
    buf_json_str(out, label);
  }
  buf_put(out, ",\"keyslots\":", 12);
  keyslots_json(cd, type, out);
  buf_put(out, ",\"tokens\":", 10);
  tokens_json(cd, type, out);
  buf_put(out, "}", 1);
  return out->oom ? fail(c, ST_NOMEM, -ENOMEM, "out of memory building the answer") : ST_OK;
}
