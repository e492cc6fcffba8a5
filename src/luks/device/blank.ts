import { luksError, LuksError } from '../errors.js';
import { exec, type ExecContext } from '../commands/exec.js';
import type { DeviceOps, ZeroScan } from './ops.js';
import type { DeviceIdentity } from './identity.js';
import type { CryptOps } from '../crypt/crypt-ops.js';
import { readFailure } from '../header/read.js';


/**
 * Safe format: a device is blank only when blkid finds no signature of any
 * kind and everything the format will write (`span`: up to the data offset,
 * 16 MiB for LUKS2, 2 MiB for LUKS1) reads back as zeros. blkid -p on a whole
 * disk does not see a file system that starts 1 MiB in behind a wiped
 * partition table; its superblock is non-zero within the span. Any doubt,
 * including a read error, means "not blank". os-brick formats any device
 * whose luksOpen and isLuks failed, even after a transient read error, which
 * destroys data.
 * @throws E_DEVICE_NOT_BLANK naming what was found, E_DEVICE_UNREADABLE
 */
export async function assertBlank(crypt: CryptOps, ops: DeviceOps, pinned: DeviceIdentity, span: number): Promise<void> {
  const device = pinned.path;
  const found = await crypt.probe(pinned, 'format');
  if (found !== undefined) {
    throw luksError('E_DEVICE_NOT_BLANK', `Device ${device} is not blank (${describeSignature(found)}); refusing to format`, {
      details: { device, signature: found.kind, ...(found.offset === undefined ? {} : { offset: found.offset }) },
    });
  }
  // Scanned where the device is (the guest agent in tests): the bytes never travel, only the answer.
  let scan: ZeroScan;
  try {
    scan = await ops.scanZeros(device, span);
  } catch (err) {
    throw luksError('E_DEVICE_UNREADABLE', `Cannot read the first ${mib(span)} of ${device} (${readFailure(err)}); refusing to format`, { cause: err, details: { device } });
  }
  if (scan.firstNonZero !== undefined) {
    throw luksError('E_DEVICE_NOT_BLANK', `Device ${device} is not blank (non-zero data at 0x${scan.firstNonZero.toString(16)}, within the first ${mib(span)} the format would overwrite); refusing to format`, {
      details: { device, offset: scan.firstNonZero },
    });
  }
  if (scan.scanned < span) {
    throw luksError('E_DEVICE_NOT_BLANK', `Device ${device} is smaller than the ${mib(span)} the LUKS header needs; refusing to format`, { details: { device, size: scan.scanned } });
  }
}

const mib = (bytes: number): string => `${bytes / (1024 * 1024)} MiB`;

export interface Signature {
  /** blkid's TYPE (ext4, crypto_LUKS, swap, ...), PTTYPE or USAGE. */
  kind: string;
  offset?: number | undefined;
}

/** "ext4 signature at 0x438", for messages. */
export function describeSignature(found: Signature): string {
  return `${found.kind} signature${found.offset === undefined ? '' : ` at 0x${found.offset.toString(16)}`}`;
}

/**
 * The first signature blkid finds on the device (a file system, a LUKS
 * header, a partition table, swap), or undefined when it finds none.
 * @throws E_DEVICE_UNREADABLE when the probe itself fails: doubt is never "nothing there"
 */
export async function probeSignature(ctx: ExecContext, device: string, purpose: string): Promise<Signature | undefined> {
  // -p: low-level probe of the device itself, not the (possibly stale) blkid cache. Exit 2: nothing found.
  const probe = await exec(ctx, ['blkid', '-p', '-o', 'export', device], { ok: [2], what: `probe ${device} for signatures` }).catch((err: unknown) => {
    // A probe that hung and was killed stays a timeout (details.stuck): health must count its held slot.
    if (err instanceof LuksError && err.code === 'E_CRYPTSETUP_TIMEOUT') throw err;
    throw luksError('E_DEVICE_UNREADABLE', `Cannot probe ${device} for signatures; refusing to ${purpose}`, { cause: err, details: { device } });
  });
  if (probe.code !== 0) return undefined;
  const found = parseExport(probe.stdout.toString('utf8'));
  const kind = found['TYPE'] ?? found['PTTYPE'] ?? found['USAGE'] ?? 'unknown';
  return { kind, offset: await signatureOffset(ctx, device, kind) };
}

/** Where the signature sits, for the message only: wipefs --no-act lists, it never erases. */
async function signatureOffset(ctx: ExecContext, device: string, kind: string): Promise<number | undefined> {
  try {
    const listed = await exec(ctx, ['wipefs', '--no-act', '--json', device], { what: `list the signatures on ${device}` });
    const parsed = JSON.parse(listed.stdout.toString('utf8') || '{}') as { signatures?: Array<{ offset?: string; type?: string }> };
    const match = parsed.signatures?.find((sig) => sig.type === kind) ?? parsed.signatures?.[0];
    return match?.offset === undefined ? undefined : Number(match.offset);
  } catch {
    return undefined;
  }
}

function parseExport(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) out[line.slice(0, eq)] = line.slice(eq + 1);
  }
  return out;
}
