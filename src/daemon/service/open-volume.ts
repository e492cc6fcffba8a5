import { performance } from 'node:perf_hooks';
import type { DeviceIdentity, DiskToken, LuksHeader, MappingStatus, SlotKey } from '../../luks/driver.js';
import { luksError } from '../../luks/errors.js';
import type { Provider } from '../../luks/providers/index.js';
import type { ManagedObject } from '../../keyclient/objects/index.js';
import type { AttachAnswer } from '../../api/wire.js';
import { killPoint } from './kill-point.js';
import { codeOf, elapsed, type ServiceDeps } from './context.js';

/** What an open needs once the key is known. */
export interface OpenRequest {
  name: string;
  /** Pinned once per request: every step acts on this major:minor, checked again before a write. */
  device: DeviceIdentity;
  /** The device's LUKS header as read under the request's locks; undefined when it holds none. */
  header: LuksHeader | undefined;
  provider: Exclude<Provider, 'nop'>;
  format: 'never' | 'if-blank';
  /** Written into a LUKS2 header at format (ephemeral disks): the disk's identity, no secret. */
  token?: DiskToken | undefined;
  /** Written into a LUKS2 header at format (volumes): which key opens keyslot 0. */
  volumeToken?: Record<string, SlotKey> | undefined;
  cipher?: string | undefined;
  keySize?: number | undefined;
  readOnly: boolean;
  allowDiscards: boolean;
}

export interface Opened {
  opened: boolean;
  formatted: boolean;
  keyslotUpgraded: boolean;
  status: MappingStatus | undefined;
  uuid: string | null;
}

export const isLuksType = (provider: Provider): provider is 'luks' | 'luks2' => provider === 'luks' || provider === 'luks2';

/**
 * Opens the device with `key`, formatting it first when the request allows
 * and the device is provably blank. The caller owns and wipes the key.
 * @throws E_DEVICE_WRONG when a LUKS open finds no header and format is "never"
 */
export async function openWithKey(deps: ServiceDeps, req: OpenRequest, key: ManagedObject, timings: AttachAnswer['timings_ms'], existing: MappingStatus | undefined, signal?: AbortSignal): Promise<Opened> {
  const luks = deps.luks();
  const { driver } = deps;
  let formatted = false;
  if (isLuksType(req.provider) && existing === undefined && req.header === undefined) {
    if (req.format !== 'if-blank') {
      throw luksError('E_DEVICE_WRONG', `Device ${req.device.path} holds no LUKS header and format is "never"; pass format "if-blank" to format a blank device`, {
        details: { device: req.device.path },
      });
    }
    signal?.throwIfAborted();
    const t = performance.now();
    await driver.format(req.device, key.bytes(), {
      type: req.provider === 'luks' ? 'luks' : 'luks2',
      cipher: req.cipher ?? luks.cipher,
      keySize: req.keySize ?? luks.key_size,
      pbkdf: { type: luks.pbkdf, iterations: luks.pbkdf_iterations },
      signal,
      ...(req.token === undefined ? {} : { token: req.token }),
      ...(req.volumeToken === undefined ? {} : { volumeToken: req.volumeToken }),
    });
    timings.format = elapsed(t);
    formatted = true;
    killPoint('attach:formatted');
  }
  signal?.throwIfAborted();
  const t = performance.now();
  const opened = await driver.open(req.device, req.name, key.bytes(), {
    type: req.provider,
    readOnly: req.readOnly,
    allowDiscards: req.allowDiscards,
    perfNoWorkqueue: luks.perf_no_workqueue,
    signal,
    ...(req.provider === 'plain' ? { cipher: req.cipher ?? luks.cipher, keySize: req.keySize ?? luks.key_size } : {}),
  });
  timings.open = elapsed(t);
  if (opened.legacyPassphrase) deps.log.warn('legacy os-brick passphrase opened the volume', { name: req.name, device: req.device.path });
  if (opened.removedHalfCreated) deps.log.warn('removed a half-created mapping of this name (an earlier open was killed midway) before opening', { name: req.name, device: req.device.path });
  // Read-only means no write of any kind: not even the header's keyslot rewrite.
  const upgrade = isLuksType(req.provider) && opened.opened && !formatted && !req.readOnly && luks.upgrade_keyslots;
  const keyslotUpgraded = upgrade ? await upgradeKeyslot(deps, req, key, opened.legacyPassphrase) : false;
  return { opened: opened.opened, formatted, keyslotUpgraded, status: opened.status, uuid: opened.uuid };
}

/**
 * The volume is open, so the key is right: rewriting its slot now makes every
 * later open fast. A failure leaves the volume as it was (cryptsetup writes
 * the new slot before retiring the old) and never fails the attach.
 */
async function upgradeKeyslot(deps: ServiceDeps, req: OpenRequest, key: ManagedObject, legacyPassphrase: boolean): Promise<boolean> {
  const luks = deps.luks();
  try {
    const result = await deps.driver.upgradeKeyslot(req.device, key.bytes(), { pbkdf: { type: luks.pbkdf, iterations: luks.pbkdf_iterations }, legacyPassphrase });
    if (result.upgraded) deps.log.info('keyslot rewritten to the fast PBKDF', { name: req.name, device: req.device.path, from: result.from, to: result.to });
    return result.upgraded;
  } catch (err) {
    deps.log.warn('keyslot upgrade failed; the volume is attached and unchanged', { name: req.name, device: req.device.path, error: codeOf(err) });
    return false;
  }
}
