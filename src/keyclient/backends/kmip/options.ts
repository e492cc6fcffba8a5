import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { keyError } from '../../errors.js';
import { absoluteFile, seconds } from '../../options.js';
import type { ProtocolVersion } from './messages.js';

/**
 * The kmip backend's options (key_manager.kmip). The CA, client certificate
 * and client key each come from a file (`ca_file`) or a systemd credential
 * (`ca_credential`, read from $CREDENTIALS_DIRECTORY), resolved to a path
 * here. The files are read when the backend is created, like the local
 * keystore's KEK: a config stays valid before they exist (examples/kmip.yaml
 * names what `make kmip-dev` writes), and the key's bytes are wiped as soon
 * as TLS holds them.
 */

const credentialName = () => z.string().regex(/^[A-Za-z0-9_.@-]+$/, 'must be a credential name').optional();
const PEM_SOURCES = ['ca', 'cert', 'key'] as const;

export const kmipOptionsSchema = z
  .strictObject({
    host: z.string().min(1),
    port: z.number().int().min(1).max(65535).default(5696),
    ca_file: z.string().min(1).optional(),
    ca_credential: credentialName(),
    cert_file: z.string().min(1).optional(),
    cert_credential: credentialName(),
    key_file: z.string().min(1).optional(),
    key_credential: credentialName(),
    /** The name the server's certificate must carry, when it is not `host`. */
    server_name: z.string().min(1).optional(),
    /** Pin one protocol version instead of negotiating (DiscoverVersions offers only it). */
    protocol_version: z.enum(['1.0', '1.1', '1.2', '1.3', '1.4', '2.0']).optional(),
    /** Seconds per request (and per connect and handshake). */
    timeout_seconds: seconds().positive().max(600).default(30),
    /** Persistent TLS connections kept to the server; requests beyond wait for one. */
    pool_size: z.number().int().min(1).max(64).default(4),
    /**
     * Where `key adopt` records which project an object made by another client
     * belongs to (docs/kmip.md, "Keys made elsewhere"). Absolute; the same file
     * for the daemon and the CLI. Unset: nothing can be adopted.
     */
    adoptions_file: absoluteFile().optional(),
  })
  .transform((opts, ctx) => {
    const out = { ...opts } as Record<string, unknown>;
    for (const name of PEM_SOURCES) {
      const file = opts[`${name}_file`];
      const credential = opts[`${name}_credential`];
      delete out[`${name}_credential`];
      if ((file === undefined) === (credential === undefined)) {
        ctx.addIssue({ code: 'custom', path: [`${name}_file`], message: `give exactly one of ${name}_file and ${name}_credential` });
        continue;
      }
      let path = file;
      if (credential !== undefined) {
        const dir = process.env['CREDENTIALS_DIRECTORY'];
        if (dir === undefined || dir === '') {
          ctx.addIssue({ code: 'custom', path: [`${name}_credential`], message: `$CREDENTIALS_DIRECTORY is not set; add LoadCredential=${credential}:... to the unit or use ${name}_file` });
          continue;
        }
        path = join(dir, credential);
      }
      out[`${name}_file`] = path;
    }
    return out as Omit<typeof opts, 'ca_credential' | 'cert_credential' | 'key_credential'> & { ca_file: string; cert_file: string; key_file: string };
  });

export type KmipOptions = z.output<typeof kmipOptionsSchema>;

export function parseVersion(text: string | undefined): ProtocolVersion | undefined {
  if (text === undefined) return undefined;
  const [major, minor] = text.split('.').map(Number);
  return { major: major as number, minor: minor as number };
}

/**
 * Reads a PEM file the options named.
 * @throws E_INVALID_ARGUMENT when it is unreadable or holds no PEM block.
 */
export function readPem(path: string, what: string): Buffer {
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (err) {
    throw keyError('E_INVALID_ARGUMENT', `Cannot read the KMIP ${what} ${path} (${(err as NodeJS.ErrnoException).code ?? 'error'})`, { details: { path } });
  }
  if (bytes.indexOf('-----BEGIN ') === -1) {
    bytes.fill(0);
    throw keyError('E_INVALID_ARGUMENT', `The KMIP ${what} ${path} holds no PEM block; give a PEM file`, { details: { path } });
  }
  return bytes;
}
