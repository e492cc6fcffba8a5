import type { ProviderDefinition } from '../options.js';
import { luksFormatArgv, luksOpenArgv } from './luks-header.js';

/** LUKS2 (os-brick's Luks2Encryptor): a JSON header, any PBKDF, a label. */
export const luks2: ProviderDefinition = {
  name: 'luks2',
  kernelType: 'LUKS2',
  formatSpan: 16 * 1024 * 1024,
  header: true,
  formatArgv: (path, opts, defaultPbkdf) => luksFormatArgv(path, 'luks2', opts, defaultPbkdf),
  openArgv: luksOpenArgv,
};
