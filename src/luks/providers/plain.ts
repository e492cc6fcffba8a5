import type { ProviderDefinition } from '../options.js';

/**
 * plain dm-crypt (os-brick's CryptsetupEncryptor): no header, nothing to
 * format; the key and the cipher alone make the mapping. Mapped with
 * os-brick's `cryptsetup create` line, so plain volumes map identically.
 */
export const plain: ProviderDefinition = {
  name: 'plain',
  kernelType: 'PLAIN',
  formatSpan: 0,
  header: false,
  formatArgv: undefined,
  openArgv(path, name, flags, opts) {
    const argv = ['cryptsetup', 'create', '--key-file=-', ...flags];
    if (opts.cipher !== undefined) argv.push('--cipher', opts.cipher);
    if (opts.keySize !== undefined) argv.push('--key-size', String(opts.keySize));
    return [...argv, name, path];
  },
};
