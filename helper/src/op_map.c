/* Mappings: OPEN, CLOSE, RESIZE, STATUS. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/sysmacros.h>

#include "dm.h"
#include "ops.h"
#include "secmem.h"

static uint32_t activate_flags(uint32_t f) {
  uint32_t a = 0;
  if (f & FL_READONLY) a |= CRYPT_ACTIVATE_READONLY;
  if (f & FL_DISCARDS) a |= CRYPT_ACTIVATE_ALLOW_DISCARDS;
  if (f & FL_NO_READ_WQ) a |= CRYPT_ACTIVATE_NO_READ_WORKQUEUE;
  if (f & FL_NO_WRITE_WQ) a |= CRYPT_ACTIVATE_NO_WRITE_WORKQUEUE;
  return a;
}

/* The CLI's `create --key-file=- [--cipher C] [--key-size K]`: its defaults, and the
 * ripemd160 passphrase hash it keeps for a key file on stdin (only a named key
 * file skips hashing). */
static int format_plain(struct opctx *c, struct crypt_device *cd) {
  const struct request *q = c->req;
  const char *spec = q->cipher ? q->cipher : "aes-cbc-essiv:sha256";
  char cipher[65], *mode;
  strncpy(cipher, spec, sizeof cipher - 1);
  cipher[sizeof cipher - 1] = '\0';
  mode = strchr(cipher, '-');
  *mode++ = '\0'; /* check_cipher guarantees the dash */
  struct crypt_params_plain p = {.hash = "ripemd160", .offset = q->offset / 512, .skip = 0, .sector_size = 512};
  int r = crypt_format(cd, CRYPT_PLAIN, cipher, mode, NULL, NULL, (q->key_bits ? q->key_bits : 256) / 8, &p);
  return r < 0 ? fail_r(c, r, "cannot set up the plain mapping's parameters") : 0;
}

/* After activation: the new mapping must sit on our device, else PATH changed under us; undo. */
static int check_mapped_device(struct opctx *c) {
  dev_t devs[4];
  size_t n = 0;
  int r = dm_deps(c->req->name, devs, 4, &n);
  if (r == 0 && n == 1 && devs[0] == c->devst.st_rdev) return 0;
  crypt_deactivate_by_name(NULL, c->req->name, 0);
  return fail(c, ST_DEVICE_CHANGED, 0, "%s changed to another device while %s was being opened; closed it again",
              c->req->path, c->req->name);
}

int op_open(struct opctx *c) {
  struct request *q = c->req;
  struct crypt_device *cd = NULL;
  if (dm_available() < 0) return fail(c, ST_DM_UNAVAILABLE, -ENOTCONN, "device-mapper is not available (/dev/mapper/control)");
  crypt_status_info si = crypt_status(NULL, q->name);
  if (si == CRYPT_ACTIVE || si == CRYPT_BUSY) return fail(c, ST_BUSY, -EEXIST, "a mapping named %s exists", q->name);
  int st = ctx_dev_crypt(c, &cd);
  if (st) goto out;
  int plain = strcmp(q->type, "plain") == 0;
  if (plain) st = format_plain(c, cd);
  else {
    /* Like luksOpen: whichever LUKS version the header is. */
    int r = crypt_load(cd, CRYPT_LUKS, NULL);
    if (r < 0) st = fail(c, ST_NOT_LUKS, r, "%s has no valid LUKS header", q->path);
  }
  if (st) goto out;
  int r = crypt_activate_by_passphrase(cd, q->name, CRYPT_ANY_SLOT, q->key->data, q->key->len, activate_flags(q->flags));
  if (is_wrong_key(r)) { st = fail(c, ST_WRONG_KEY, r, "no keyslot of %s opens with this key", q->path); goto out; }
  if (r == -EEXIST) { st = fail(c, ST_BUSY, r, "a mapping named %s exists", q->name); goto out; }
  if (r < 0) { st = fail_r(c, r, "cannot open the mapping"); goto out; }
  st = check_mapped_device(c);
  if (!st) reply_slot(c, plain ? -1 : r);
out:
  crypt_free(cd);
  return st;
}

int op_close(struct opctx *c) {
  struct crypt_device *cd = NULL;
  const char *name = c->req->name;
  if (dm_available() < 0) return fail(c, ST_DM_UNAVAILABLE, -ENOTCONN, "device-mapper is not available (/dev/mapper/control)");
  crypt_status_info si = crypt_status(NULL, name);
  if (si == CRYPT_INACTIVE) return fail(c, ST_NOT_FOUND, -ENODEV, "no mapping named %s", name);
  int st = ctx_crypt_init_by_name(c, &cd, name);
  if (st) return st;
  int r = crypt_deactivate_by_name(cd, name, (c->req->flags & FL_DEFERRED) ? CRYPT_DEACTIVATE_DEFERRED : 0);
  crypt_free(cd);
  if (r == -EBUSY) return fail(c, ST_BUSY, r, "%s is in use", name);
  if (r == -ENODEV) return fail(c, ST_NOT_FOUND, r, "no mapping named %s", name);
  return r < 0 ? fail_r(c, r, "cannot close the mapping") : ST_OK;
}

int op_resize(struct opctx *c) {
  struct request *q = c->req;
  struct crypt_device *cd = NULL;
  struct crypt_active_device cad;
  if (q->length % 512) return fail(c, ST_EINVAL, -EINVAL, "LENGTH must be a multiple of 512 bytes");
  int st = ctx_crypt_init_by_name(c, &cd, q->name);
  if (st) return st;
  int r = crypt_get_active_device(cd, q->name, &cad);
  if (r < 0) { st = fail_r(c, r, "cannot read the mapping"); goto out; }
  /* As `cryptsetup resize`: a volume key kept in the kernel keyring has to be reloaded with a passphrase first. */
  if (cad.flags & CRYPT_ACTIVATE_KEYRING_KEY) {
    if (!q->key) { st = fail(c, ST_EINVAL, -EINVAL, "%s keeps its volume key in the keyring: RESIZE needs KEY", q->name); goto out; }
    r = crypt_activate_by_passphrase(cd, NULL, CRYPT_ANY_SLOT, q->key->data, q->key->len, CRYPT_ACTIVATE_KEYRING_KEY);
    if (is_wrong_key(r)) { st = fail(c, ST_WRONG_KEY, r, "no keyslot opens with this key"); goto out; }
    if (r < 0) { st = fail_r(c, r, "cannot load the volume key"); goto out; }
  }
  r = crypt_resize(cd, q->name, q->length / 512);
  st = r < 0 ? fail_r(c, r, "cannot resize the mapping") : ST_OK;
out:
  crypt_free(cd);
  return st;
}

static void flags_json(uint32_t f, struct buf *b) {
  static const struct { uint32_t bit; const char *name; } N[] = {
    {CRYPT_ACTIVATE_READONLY, "readonly"}, {CRYPT_ACTIVATE_ALLOW_DISCARDS, "discards"},
    {CRYPT_ACTIVATE_SAME_CPU_CRYPT, "same_cpu_crypt"}, {CRYPT_ACTIVATE_SUBMIT_FROM_CRYPT_CPUS, "submit_from_crypt_cpus"},
    {CRYPT_ACTIVATE_NO_READ_WORKQUEUE, "no_read_workqueue"}, {CRYPT_ACTIVATE_NO_WRITE_WORKQUEUE, "no_write_workqueue"},
    {CRYPT_ACTIVATE_KEYRING_KEY, "keyring_key"},
  };
  buf_put(b, "[", 1);
  int first = 1;
  for (size_t i = 0; i < sizeof N / sizeof N[0]; i++)
    if (f & N[i].bit) { buf_printf(b, "%s\"%s\"", first ? "" : ",", N[i].name); first = 0; }
  buf_put(b, "]", 1);
}

int op_status(struct opctx *c) {
  const char *name = c->req->name;
  struct dm_state ds;
  int r = dm_state(name, &ds);
  if (r == -ENOTCONN) return fail(c, ST_DM_UNAVAILABLE, r, "device-mapper is not available (/dev/mapper/control)");
  if (r == -ENXIO || r == -ENODEV) return fail(c, ST_NOT_FOUND, r, "no mapping named %s", name);
  if (r < 0) return fail_r(c, r, "device-mapper status failed");
  struct crypt_device *cd = NULL;
  struct crypt_active_device cad = {0};
  /* A mapping that is not crypt (or has no table) still has a state: type null. */
  int have_cd = crypt_init_by_name(&cd, name) == 0 && crypt_get_active_device(cd, name, &cad) == 0;
  const char *type = have_cd ? crypt_get_type(cd) : NULL;
  struct buf b = {0};
  buf_put(&b, "{\"type\":", 8);
  if (type) buf_json_str(&b, type);
  else buf_put(&b, "null", 4);
  if (have_cd && crypt_get_cipher(cd)) {
    buf_put(&b, ",\"cipher\":", 10);
    char spec[160];
    snprintf(spec, sizeof spec, "%s-%s", crypt_get_cipher(cd), crypt_get_cipher_mode(cd) ? crypt_get_cipher_mode(cd) : "");
    buf_json_str(&b, spec);
    buf_printf(&b, ",\"key_bits\":%d", crypt_get_volume_key_size(cd) * 8);
  }
  if (have_cd && crypt_get_device_name(cd)) {
    buf_put(&b, ",\"device\":", 10);
    buf_json_str(&b, crypt_get_device_name(cd));
  }
  dev_t devs[4];
  size_t n = 0;
  if (dm_deps(name, devs, 4, &n) == 0 && n == 1) buf_printf(&b, ",\"device_rdev\":\"%u:%u\"", major(devs[0]), minor(devs[0]));
  if (have_cd) {
    buf_printf(&b, ",\"offset_sectors\":%llu,\"size_sectors\":%llu,\"flags\":", (unsigned long long)cad.offset,
               (unsigned long long)cad.size);
    flags_json(cad.flags, &b);
  }
  buf_printf(&b, ",\"open_count\":%d,\"suspended\":%s,\"dm_uuid\":", ds.open_count, ds.suspended ? "true" : "false");
  buf_json_str(&b, ds.uuid);
  buf_put(&b, "}", 1);
  crypt_free(cd);
  int st = b.oom ? fail(c, ST_NOMEM, -ENOMEM, "out of memory") : ST_OK;
  if (!st) reply_json(c, &b);
  buf_free(&b);
  return st;
}
