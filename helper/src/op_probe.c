/* PROBE: what `blkid -p` says of a device (a file system, a LUKS header, a
 * partition table, swap), by libblkid on the descriptor the RDEV check
 * pinned. The daemon refuses to format a device with any signature, or to
 * map as plain one that holds something else: a doubt answers as an error,
 * never as "nothing there". */
#include <blkid.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"

static void json_str(struct buf *b, const char *key, const char *value, int comma) {
  buf_printf(b, "%s\"%s\":", comma ? "," : "", key);
  if (!value) {
    buf_printf(b, "null");
    return;
  }
  buf_put(b, "\"", 1);
  /* blkid's values are short identifiers (ext4, gpt, filesystem); anything else is escaped out. */
  for (const char *p = value; *p; p++) {
    unsigned char ch = (unsigned char)*p;
    if (ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\') buf_put(b, p, 1);
    else buf_printf(b, "\\u%04x", ch);
  }
  buf_put(b, "\"", 1);
}

static const char *value(blkid_probe pr, const char *name) {
  const char *v = NULL;
  return blkid_probe_lookup_value(pr, name, &v, NULL) == 0 ? v : NULL;
}

int op_probe(struct opctx *c) {
  int st = open_for_read(c);
  if (st) return st;
  blkid_probe pr = blkid_new_probe();
  if (!pr) return fail(c, ST_NOMEM, -ENOMEM, "cannot start a blkid probe");
  if (blkid_probe_set_device(pr, c->devfd, 0, 0) != 0) {
    blkid_free_probe(pr);
    return fail(c, ST_IO, -EIO, "blkid cannot probe %s", c->req->path);
  }
  blkid_probe_enable_superblocks(pr, 1);
  blkid_probe_set_superblocks_flags(pr, BLKID_SUBLKS_TYPE | BLKID_SUBLKS_USAGE | BLKID_SUBLKS_MAGIC);
  blkid_probe_enable_partitions(pr, 1);
  blkid_probe_set_partitions_flags(pr, BLKID_PARTS_MAGIC);
  int r = blkid_do_safeprobe(pr);
  if (r < 0 && r != -2) {
    blkid_free_probe(pr);
    return fail(c, ST_IO, -EIO, "blkid could not probe %s", c->req->path);
  }
  struct buf b = {0};
  buf_put(&b, "{", 1);
  if (r == -2) {
    /* Several signatures that exclude each other: something is there, which is all a blank check needs. */
    json_str(&b, "type", "ambivalent", 0);
    json_str(&b, "usage", NULL, 1);
    json_str(&b, "pttype", NULL, 1);
    buf_printf(&b, ",\"offset\":null");
  } else {
    const char *type = r == 0 ? value(pr, "TYPE") : NULL;
    const char *pttype = r == 0 ? value(pr, "PTTYPE") : NULL;
    const char *usage = r == 0 ? value(pr, "USAGE") : NULL;
    const char *off = r == 0 ? (value(pr, "SBMAGIC_OFFSET") ? value(pr, "SBMAGIC_OFFSET") : value(pr, "PTMAGIC_OFFSET")) : NULL;
    if (r == 0 && !type && !pttype && !usage) usage = "unknown";
    json_str(&b, "type", type, 0);
    json_str(&b, "usage", usage, 1);
    json_str(&b, "pttype", pttype, 1);
    if (off) buf_printf(&b, ",\"offset\":%llu", strtoull(off, NULL, 10));
    else buf_printf(&b, ",\"offset\":null");
  }
  buf_put(&b, "}", 1);
  blkid_free_probe(pr);
  reply_json(c, &b);
  buf_free(&b);
  return ST_OK;
}
