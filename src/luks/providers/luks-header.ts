import { luksError } from '../errors.js';
import type { FormatOptions, OpenOptions, Pbkdf } from '../options.js';

/**
 * What LUKS1 and LUKS2 share: a header, so a keyslot and its PBKDF, and
 * `cryptsetup luksOpen` (which reads the version from the header).
 */

/** cryptsetup's PBKDF options for a format or a keyslot rewrite. */
export function pbkdfArgs(pbkdf: Pbkdf, type: FormatOptions['type']): string[] {
  if (pbkdf.type === 'default') return [];
  if (type === 'luks' && pbkdf.type !== 'pbkdf2') {
    throw luksError('E_LUKS_INVALID_ARGUMENT', `LUKS1 supports only the pbkdf2 PBKDF, not ${pbkdf.type}`);
  }
  const args = ['--pbkdf', pbkdf.type];
  if (pbkdf.iterations !== undefined) args.push('--pbkdf-force-iterations', String(pbkdf.iterations));
  if (pbkdf.memoryKiB !== undefined) args.push('--pbkdf-memory', String(pbkdf.memoryKiB));
  return args;
}

/** os-brick's luksFormat line (the key follows on stdin). */
export function luksFormatArgv(path: string, version: 'luks1' | 'luks2', opts: FormatOptions, defaultPbkdf: Pbkdf): string[] {
  const argv = ['cryptsetup', '--batch-mode', 'luksFormat', '--type', version, '--key-file=-'];
  if (opts.cipher !== undefined) argv.push('--cipher', opts.cipher);
  if (opts.keySize !== undefined) argv.push('--key-size', String(opts.keySize));
  argv.push(...pbkdfArgs(opts.pbkdf ?? defaultPbkdf, opts.type));
  if (opts.label !== undefined && version === 'luks2') argv.push('--label', opts.label);
  argv.push(path);
  return argv;
}

/** os-brick's luksOpen line; cipher and key size come from the header. */
export function luksOpenArgv(path: string, name: string, flags: readonly string[], _opts: OpenOptions): string[] {
  return ['cryptsetup', 'luksOpen', '--key-file=-', ...flags, path, name];
}
