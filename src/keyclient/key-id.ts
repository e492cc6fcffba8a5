/**
 * One key, one id: a Barbican secret is named by its UUID or by its href
 * (`https://kms/v1/secrets/UUID`), and os-brick metadata carries either. What
 * portcullis records and compares is the canonical form, the UUID at the end
 * of an href; any other id (a bare UUID, a local or KMIP id) is itself, as
 * given (a KMIP server's ids are case-sensitive).
 */
const SECRET_HREF = /\/secrets\/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\/?$/i;

export function canonicalKeyId(id: string): string {
  const href = SECRET_HREF.exec(id);
  return href?.[1] ?? id;
}
