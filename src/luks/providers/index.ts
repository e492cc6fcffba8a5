import { luksError } from '../errors.js';
import type { ProviderDefinition } from '../options.js';
import { luks1 } from './luks1.js';
import { luks2 } from './luks2.js';
import { plain } from './plain.js';

/** On-disk formats, as os-brick names them (plus nop: no encryption at all). */
export type Provider = 'luks' | 'luks2' | 'plain' | 'nop';

/**
 * Every name an agent may send as `provider`: os-brick's format names and
 * the encryptor class names (current and legacy nova ones) that Cinder's
 * encryption metadata still carries.
 */
const aliases: ReadonlyMap<string, Provider> = new Map(Object.entries({
  luks: 'luks',
  luks1: 'luks',
  luks2: 'luks2',
  plain: 'plain',
  nop: 'nop',
  LuksEncryptor: 'luks',
  Luks2Encryptor: 'luks2',
  CryptsetupEncryptor: 'plain',
  NoOpEncryptor: 'nop',
  NoopEncryptor: 'nop',
  'os_brick.encryptors.luks.LuksEncryptor': 'luks',
  'os_brick.encryptors.luks.Luks2Encryptor': 'luks2',
  'os_brick.encryptors.cryptsetup.CryptsetupEncryptor': 'plain',
  'os_brick.encryptors.nop.NoOpEncryptor': 'nop',
  'os_brick.encryptors.nop.NoopEncryptor': 'nop',
  'nova.volume.encryptors.luks.LuksEncryptor': 'luks',
  'nova.volume.encryptors.cryptsetup.CryptsetupEncryptor': 'plain',
  'nova.volume.encryptors.nop.NoopEncryptor': 'nop',
} satisfies Record<string, Provider>));

/**
 * A Map, not an object: request input is never looked up through a
 * prototype ("__proto__", "constructor" are unknown providers, not objects).
 * @throws E_LUKS_INVALID_ARGUMENT naming the accepted values
 */
export function resolveProvider(name: string): Provider {
  const provider = aliases.get(name) ?? aliases.get(name.toLowerCase());
  if (provider === undefined) {
    throw luksError('E_LUKS_INVALID_ARGUMENT', `Unknown encryption provider "${name}" (use luks, luks2, plain, nop or an os-brick encryptor class name)`, {
      details: { provider: name },
    });
  }
  return provider;
}

export const providerNames = [...aliases.keys()];

const definitions: Record<Exclude<Provider, 'nop'>, ProviderDefinition> = { luks: luks1, luks2, plain };

/** How the driver formats and opens a provider's volumes. */
export function providerDefinition(provider: Exclude<Provider, 'nop'>): ProviderDefinition {
  return definitions[provider];
}
