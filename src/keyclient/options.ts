import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';

/**
 * Secrets in config (passwords, application-credential secrets) may be given
 * inline (`password`), as a file (`password_file`) or as a systemd credential
 * (`password_credential`, read from $CREDENTIALS_DIRECTORY). They are read
 * here, while the config is validated, so a missing file is reported with
 * every other config error at once and never later at 3 a.m.
 */
export function secretFields<const N extends string>(name: N) {
  return {
    [name]: z.string().min(1).optional(),
    [`${name}_file`]: z.string().min(1).optional(),
    [`${name}_credential`]: z.string().regex(/^[A-Za-z0-9_.@-]+$/, 'must be a credential name').optional(),
  } as Record<N | `${N}_file` | `${N}_credential`, z.ZodOptional<z.ZodString>>;
}

type WithoutSourceKeys<T, N extends string> = Omit<T, `${N}_file` | `${N}_credential`>;

/**
 * Resolves the secret fields `names` of a parsed options object: the result
 * carries only `name` (the secret itself) and none of the *_file/*_credential
 * keys.
 */
export function resolveSecrets<T extends Record<string, unknown>, N extends string>(
  schema: z.ZodType<T>,
  names: readonly N[],
): z.ZodType<WithoutSourceKeys<T, N>, unknown> {
  return schema.transform((value, ctx) => {
    const out: Record<string, unknown> = { ...value };
    for (const name of names) {
      const inline = value[name];
      const file = value[`${name}_file`];
      const credential = value[`${name}_credential`];
      delete out[`${name}_file`];
      delete out[`${name}_credential`];
      const given = [inline, file, credential].filter((v) => v !== undefined).length;
      if (given > 1) {
        ctx.addIssue({ code: 'custom', path: [name], message: `give only one of ${name}, ${name}_file, ${name}_credential` });
        continue;
      }
      if (typeof file === 'string') {
        const read = readSecretFile(file);
        if (read.ok) out[name] = read.value;
        else ctx.addIssue({ code: 'custom', path: [`${name}_file`], message: read.error });
      } else if (typeof credential === 'string') {
        const dir = process.env['CREDENTIALS_DIRECTORY'];
        if (dir === undefined || dir === '') {
          ctx.addIssue({
            code: 'custom',
            path: [`${name}_credential`],
            message: `$CREDENTIALS_DIRECTORY is not set; add LoadCredential=${credential}:... to the unit or use ${name}_file`,
          });
        } else {
          const read = readSecretFile(join(dir, credential));
          if (read.ok) out[name] = read.value;
          else ctx.addIssue({ code: 'custom', path: [`${name}_credential`], message: read.error });
        }
      }
    }
    return out as WithoutSourceKeys<T, N>;
  });
}

function readSecretFile(path: string): { ok: true; value: string } | { ok: false; error: string } {
  try {
    // A trailing newline is what `echo secret > file` leaves; it is never part of the secret.
    const value = readFileSync(path, 'utf8').replace(/\r?\n$/, '');
    if (value === '') return { ok: false, error: `secret file ${path} is empty` };
    return { ok: true, value };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    return { ok: false, error: `cannot read secret file ${path} (${code})` };
  }
}

/** Seconds as a positive finite number (fractions allowed). */
export const seconds = () => z.number().finite().nonnegative();

/**
 * A file the daemon or a backend opens (config paths, metadata, adoptions):
 * absolute (the daemon's working directory is "/" under systemd, so a
 * relative path would quietly mean something else) and free of NUL (which no
 * system call takes).
 */
export const absoluteFile = () =>
  z
    .string()
    .min(1)
    .max(4096)
    .refine((p) => p.startsWith('/'), 'must be an absolute path (start with "/")')
    .refine((p) => !p.includes('\0'), 'must not contain a NUL byte');
