/* LUKS headers and keyslots: HEADER, FORMAT, KEY_*, ERASE, TOKEN_SET. */
#include <errno.h>
#include <string.h>

#include "header.h"
#include "ops.h"
#include "secmem.h"

int op_header(struct opctx *c) {
  struct crypt_device *cd = NULL;
  struct buf b = {0};
  int st = ctx_dev_crypt(c, &cd);
  if (!st) st = header_verdict(c, cd, &b);
  if (!st) reply_json(c, &b);
  buf_free(&b);
  crypt_free(cd);
  return st;
}

/* PBKDF, ITERATIONS, MEMORY_KIB as the CLI's --pbkdf, --pbkdf-force-iterations, --pbkdf-memory. */
static int set_pbkdf(struct opctx *c, struct crypt_device *cd, const char *type) {
  const struct request *q = c->req;
  if (!(q->have & (BIT(T_PBKDF) | BIT(T_ITERATIONS) | BIT(T_MEMORY_KIB)))) return 0;
  const struct crypt_pbkdf_type *def = crypt_get_pbkdf_default(type);
  if (!def) return fail(c, ST_FAILED, -EINVAL, "libcryptsetup has no default PBKDF for %s", type);
  struct crypt_pbkdf_type p = *def;
  if (q->pbkdf && strcmp(q->pbkdf, "default") != 0) p.type = q->pbkdf;
  if (strcmp(p.type, CRYPT_KDF_PBKDF2) == 0) {
    p.max_memory_kb = 0;
    p.parallel_threads = 0;
    if (q->have & BIT(T_MEMORY_KIB)) return fail(c, ST_EINVAL, -EINVAL, "MEMORY_KIB is for argon2 only");
  } else {
    if (strcmp(def->type, CRYPT_KDF_PBKDF2) == 0) { p.max_memory_kb = 1048576; p.parallel_threads = 4; }
    if (q->have & BIT(T_MEMORY_KIB)) p.max_memory_kb = q->memory_kib;
  }
  if (q->iterations) {
    p.iterations = q->iterations;
    p.time_ms = 0;
    p.flags |= CRYPT_PBKDF_NO_BENCHMARK;
  }
  int r = crypt_set_pbkdf_type(cd, &p);
  return r < 0 ? fail(c, ST_EINVAL, r, "libcryptsetup refused these PBKDF parameters") : 0;
}

int op_format(struct opctx *c) {
  struct request *q = c->req;
  struct crypt_device *cd = NULL;
  int luks2 = strcmp(q->type, "luks2") == 0;
  const char *type = luks2 ? CRYPT_LUKS2 : CRYPT_LUKS1;
  int st = ctx_dev_crypt(c, &cd);
  if (st) goto out;
  const char *spec = q->cipher ? q->cipher : "aes-xts-plain64";
  char cipher[65], *mode;
  strncpy(cipher, spec, sizeof cipher - 1);
  cipher[sizeof cipher - 1] = '\0';
  mode = strchr(cipher, '-');
  *mode++ = '\0';
  /* luksFormat's default: 256 bits, doubled for XTS (two keys). */
  uint32_t bits = q->key_bits ? q->key_bits : (strncmp(mode, "xts-", 4) == 0 ? 512 : 256);
  if ((st = set_pbkdf(c, cd, type))) goto out;
  struct crypt_params_luks1 p1 = {.hash = "sha256"};
  struct crypt_params_luks2 p2 = {.label = q->label, .sector_size = 512};
  int r = crypt_format(cd, type, cipher, mode, NULL, NULL, bits / 8, luks2 ? (void *)&p2 : (void *)&p1);
  if (r < 0) { st = fail_r(c, r, "cannot format the device"); goto out; }
  r = crypt_keyslot_add_by_volume_key(cd, CRYPT_ANY_SLOT, NULL, 0, q->key->data, q->key->len);
  if (r < 0) { st = fail_r(c, r, "cannot add the first keyslot"); goto out; }
  if (q->token_json) {
    r = crypt_token_json_set(cd, CRYPT_ANY_TOKEN, q->token_json);
    if (r < 0) { st = fail_r(c, r, "formatted, but cannot store TOKEN_JSON"); goto out; }
  }
  struct buf b = {0};
  buf_put(&b, "{\"uuid\":", 8);
  buf_json_str(&b, crypt_get_uuid(cd) ? crypt_get_uuid(cd) : "");
  buf_put(&b, "}", 1);
  reply_json(c, &b);
  buf_free(&b);
out:
  crypt_free(cd);
  return st;
}

/* Every keyslot op: the checked device, then its LUKS header. */
static int load(struct opctx *c, struct crypt_device **cd) {
  int st = ctx_dev_crypt(c, cd);
  if (st) return st;
  int r = crypt_load(*cd, CRYPT_LUKS, NULL);
  return r < 0 ? fail(c, ST_NOT_LUKS, r, "%s has no valid LUKS header", c->req->path) : 0;
}

static int wrong_key(struct opctx *c, int r) {
  return fail(c, ST_WRONG_KEY, r, r == -ENOENT ? "%s has no active keyslot" : "no keyslot of %s opens with this key", c->req->path);
}

int op_key_test(struct opctx *c) {
  struct crypt_device *cd = NULL;
  int st = load(c, &cd);
  if (!st) {
    int r = crypt_activate_by_passphrase(cd, NULL, CRYPT_ANY_SLOT, c->req->key->data, c->req->key->len, 0);
    if (is_wrong_key(r)) st = wrong_key(c, r);
    else if (r < 0) st = fail_r(c, r, "cannot test the key");
    else reply_slot(c, r);
  }
  crypt_free(cd);
  return st;
}

int op_key_add(struct opctx *c) {
  struct request *q = c->req;
  struct crypt_device *cd = NULL;
  int st = load(c, &cd);
  if (!st) st = set_pbkdf(c, cd, crypt_get_type(cd));
  if (!st) {
    int r = crypt_keyslot_add_by_passphrase(cd, CRYPT_ANY_SLOT, q->key->data, q->key->len, q->new_key->data, q->new_key->len);
    if (is_wrong_key(r)) st = wrong_key(c, r);
    else if (r < 0) st = fail_r(c, r, "cannot add a keyslot");
    else reply_slot(c, r);
  }
  crypt_free(cd);
  return st;
}

int op_key_change(struct opctx *c) {
  struct request *q = c->req;
  struct crypt_device *cd = NULL;
  int st = load(c, &cd);
  if (!st) st = set_pbkdf(c, cd, crypt_get_type(cd));
  if (!st) {
    /* Find the slot KEY opens, then rewrite that same slot (luksChangeKey keeps the slot number). */
    int slot = crypt_activate_by_passphrase(cd, NULL, CRYPT_ANY_SLOT, q->key->data, q->key->len, 0);
    int r = slot < 0 ? slot
                     : crypt_keyslot_change_by_passphrase(cd, slot, slot, q->key->data, q->key->len, q->new_key->data, q->new_key->len);
    if (is_wrong_key(r)) st = wrong_key(c, r);
    else if (r < 0) st = fail_r(c, r, "cannot change the key");
    else reply_slot(c, r);
  }
  crypt_free(cd);
  return st;
}

int op_key_remove(struct opctx *c) {
  struct crypt_device *cd = NULL;
  int slot = c->req->slot;
  int st = load(c, &cd);
  if (st) goto out;
  if (slot >= crypt_keyslot_max(crypt_get_type(cd))) { st = fail(c, ST_EINVAL, -EINVAL, "%s has no keyslot %d", c->req->path, slot); goto out; }
  crypt_keyslot_info ki = crypt_keyslot_status(cd, slot);
  if (ki == CRYPT_SLOT_ACTIVE_LAST) { st = fail(c, ST_EINVAL, -EINVAL, "keyslot %d is the last active one; removing it would lose the data", slot); goto out; }
  if (ki != CRYPT_SLOT_ACTIVE && ki != CRYPT_SLOT_UNBOUND) { st = fail(c, ST_NOT_FOUND, -ENOENT, "keyslot %d is not in use", slot); goto out; }
  int r = crypt_keyslot_destroy(cd, slot);
  if (r < 0) st = fail_r(c, r, "cannot remove the keyslot");
out:
  crypt_free(cd);
  return st;
}

int op_erase(struct opctx *c) {
  struct crypt_device *cd = NULL;
  int st = load(c, &cd);
  if (st) goto out;
  int max = crypt_keyslot_max(crypt_get_type(cd));
  for (int s = 0; s < max && !st; s++) {
    crypt_keyslot_info ki = crypt_keyslot_status(cd, s);
    if (ki != CRYPT_SLOT_ACTIVE && ki != CRYPT_SLOT_ACTIVE_LAST && ki != CRYPT_SLOT_UNBOUND) continue;
    int r = crypt_keyslot_destroy(cd, s);
    if (r < 0) st = fail_r(c, r, "cannot destroy a keyslot");
  }
out:
  crypt_free(cd);
  return st;
}

int op_token_set(struct opctx *c) {
  struct crypt_device *cd = NULL;
  int st = load(c, &cd);
  if (!st && strcmp(crypt_get_type(cd), CRYPT_LUKS2) != 0) st = fail(c, ST_EINVAL, -EINVAL, "tokens need a LUKS2 header");
  if (!st) {
    int r = crypt_token_json_set(cd, c->req->slot < 0 ? CRYPT_ANY_TOKEN : c->req->slot, c->req->token_json);
    if (r < 0) st = fail_r(c, r, "cannot store the token");
    else reply_slot(c, r);
  }
  crypt_free(cd);
  return st;
}
