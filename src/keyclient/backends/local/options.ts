import { z } from 'zod';

/**
 * The `key_manager.local` options: apart from the backend's code, so the
 * config can be validated without loading SQLite and the keystore
 * (registry.ts loads a backend's code only when the config names it).
 */
export const localOptionsSchema = z.strictObject({
  /** SQLite file; created 0600 (its directory 0700); refused if its mode is wider than 0600. */
  path: z.string().min(1).default('/var/lib/portcullis/keystore.db'),
  /** The 32-byte key-encryption key; refused if its mode is wider than 0600. */
  kek_file: z.string().min(1).default('/etc/portcullis/kek'),
  /** Name of a systemd credential ($CREDENTIALS_DIRECTORY/NAME) holding the KEK; wins over kek_file. */
  kek_credential: z.string().regex(/^[A-Za-z0-9_.@-]+$/, 'must be a credential name').optional(),
  /** Create kek_file (32 random bytes, 0600) when missing and the keystore is new. */
  create_kek: z.boolean().default(true),
});
export type LocalOptions = z.output<typeof localOptionsSchema>;
