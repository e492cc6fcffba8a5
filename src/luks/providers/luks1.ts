import type { ProviderDefinition } from '../options.js';
import { luksFormatArgv, luksOpenArgv } from './luks-header.js';

/** LUKS1 (os-brick's LuksEncryptor): a header with pbkdf2 keyslots only. */
export const luks1: ProviderDefinition = {
  name: 'luks',
  kernelType: 'LUKS1',
  formatSpan: 2 * 1024 * 1024,
  header: true,
  formatArgv: (path, opts, defaultPbkdf) => luksFormatArgv(path, 'luks1', opts, defaultPbkdf),
  openArgv: luksOpenArgv,
};
