/**
 * Finds key material where it must never be: logs, audit lines, error
 * bodies, files. A key leaks in whatever form the code at hand prints bytes
 * in, so each key is looked for raw and in every text form portcullis or its
 * libraries produce: hex (lower and upper case; os-brick's passphrase is
 * lower hex), base64 (Barbican's payloads) and base64url (JWK, tokens).
 */

export type SecretForm = 'raw' | 'hex' | 'HEX' | 'base64' | 'base64url';

export interface SecretOccurrence {
  /** Index into the keys given. */
  key: number;
  /** Index into the haystacks given. */
  haystack: number;
  form: SecretForm;
  /** Byte offset in the haystack (as UTF-8 for strings). */
  offset: number;
}

export interface Haystack {
  /** What it is, for messages: "daemon log", "keystore.db". */
  name: string;
  data: Buffer | string;
}

/**
 * Every occurrence of every key of `keys` in `haystacks`, in each form.
 * Keys shorter than 8 bytes are refused: their forms turn up by chance.
 * Base64 is looked for without its padding, so a key followed by more
 * encoded bytes is found too. It is the key's own encoding that is looked
 * for (what code that prints a key prints), not the key inside some longer
 * buffer encoded from a non-multiple-of-3 offset.
 */
export function findSecrets(keys: readonly Uint8Array[], haystacks: ReadonlyArray<Haystack | Buffer | string>): SecretOccurrence[] {
  const found: SecretOccurrence[] = [];
  const hays = haystacks.map((h) => toBuffer(typeof h === 'string' || Buffer.isBuffer(h) ? h : h.data));
  keys.forEach((key, k) => {
    if (key.length < 8) throw new Error(`findSecrets: key ${k} has ${key.length} bytes; at least 8 are needed to find it without false alarms`);
    const bytes = Buffer.from(key);
    const needles: Array<[SecretForm, Buffer]> = [
      ['raw', bytes],
      ['hex', Buffer.from(bytes.toString('hex'))],
      ['HEX', Buffer.from(bytes.toString('hex').toUpperCase())],
      ['base64', Buffer.from(bytes.toString('base64').replace(/=+$/, ''))],
      ['base64url', Buffer.from(bytes.toString('base64url'))],
    ];
    hays.forEach((hay, h) => {
      for (const [form, needle] of needles) {
        for (let at = hay.indexOf(needle); at >= 0; at = hay.indexOf(needle, at + 1)) found.push({ key: k, haystack: h, form, offset: at });
      }
    });
  });
  // base64 and base64url agree for keys whose encoding has neither + nor /: report such a spot once.
  return found.filter((o, i) => !(o.form === 'base64url' && found.slice(0, i).some((p) => p.form === 'base64' && p.key === o.key && p.haystack === o.haystack && p.offset === o.offset)));
}

/** One line per occurrence, for an assertion message; never prints the key itself. */
export function describeSecrets(occurrences: readonly SecretOccurrence[], haystacks: ReadonlyArray<Haystack | Buffer | string>): string {
  return occurrences
    .map((o) => {
      const h = haystacks[o.haystack];
      const name = h !== undefined && typeof h !== 'string' && !Buffer.isBuffer(h) ? h.name : `haystack ${o.haystack}`;
      return `key ${o.key} as ${o.form} in ${name} at byte ${o.offset}`;
    })
    .join('\n');
}

function toBuffer(data: Buffer | string): Buffer {
  return typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
}
