import { luksError } from '../errors.js';
import type { DeviceOps } from '../device/ops.js';
import type { KeyslotKdf, LuksDump } from '../options.js';
import { findDiskToken, type DiskToken } from './token.js';
import { findVolumeToken, type VolumeToken } from './volume-token.js';

/**
 * A LUKS header read from the device itself, in-process: what `cryptsetup
 * isLuks`, `luksUUID` and `luksDump` answered, each a process, now one read.
 * Layouts from the LUKS1 specification and the LUKS2 on-disk format
 * document: both put the magic at 0, the version at 6 and the UUID at 168.
 */
export interface LuksHeader {
  version: 1 | 2;
  uuid: string;
  /** The keyslots and their PBKDF, as cryptsetup's dump would list them. */
  dump: LuksDump;
  /** Where the encrypted data starts, in bytes: everything before it is header and keyslots. */
  dataOffset: number | undefined;
  /** LUKS2: portcullis' token naming the disk, project and key (token.ts), when the header carries one. */
  token: DiskToken | undefined;
  /** LUKS2: portcullis' token naming the key of each keyslot (volume-token.ts), when the header carries one. */
  volumeToken: VolumeToken | undefined;
}

const MAGIC = Buffer.from([0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe]); // "LUKS\xba\xbe"
const UUID_OFFSET = 168;
const UUID_BYTES = 40;
/** LUKS2's binary header is 4 KiB; its JSON area runs to hdr_size (16 KiB by default). */
const LUKS2_BINARY = 4096;
const FIRST_READ = 16 * 1024;
/** The largest LUKS2 header the format allows. */
const LUKS2_MAX_HDR = 4 * 1024 * 1024;
const LUKS1_KEYSLOTS = 8;
const LUKS1_KEYSLOT_AT = 208;
const LUKS1_KEYSLOT_BYTES = 48;
const LUKS1_ACTIVE = 0x00ac71f3;
/** LUKS1's payload offset, in 512-byte sectors. */
const LUKS1_PAYLOAD_OFFSET_AT = 104;

const cString = (bytes: Buffer): string => {
  const nul = bytes.indexOf(0);
  return bytes.subarray(0, nul === -1 ? bytes.length : nul).toString('latin1');
};

/**
 * The header at the start of `path`, or undefined when there is none (no
 * LUKS magic). A read error is never "no header": doubt must not lead to a
 * format.
 * @throws E_DEVICE_UNREADABLE when the device cannot be read, E_LUKS_HEADER when the header is damaged
 */
export async function readLuksHeader(ops: DeviceOps, path: string): Promise<LuksHeader | undefined> {
  const first = await readOrFail(ops, path, 0, FIRST_READ);
  if (first.length < 8 || !first.subarray(0, 6).equals(MAGIC)) return undefined;
  const version = first.readUInt16BE(6);
  if (version !== 1 && version !== 2) throw damaged(path, `unknown LUKS version ${version}`);
  if (first.length < LUKS2_BINARY) throw damaged(path, 'the device ends inside the header');
  const uuid = cString(first.subarray(UUID_OFFSET, UUID_OFFSET + UUID_BYTES));
  if (version === 1) return { version, uuid, dump: { version: 1, keyslots: luks1Keyslots(first) }, dataOffset: first.readUInt32BE(LUKS1_PAYLOAD_OFFSET_AT) * 512, token: undefined, volumeToken: undefined };
  const hdrSize = Number(first.readBigUInt64BE(8));
  if (hdrSize <= LUKS2_BINARY || hdrSize > LUKS2_MAX_HDR) throw damaged(path, `LUKS2 header size ${hdrSize} is out of range`);
  const whole = hdrSize <= first.length ? first : await readOrFail(ops, path, 0, hdrSize);
  const json = cString(whole.subarray(LUKS2_BINARY, hdrSize)).trim();
  let metadata: Record<string, unknown>;
  try {
    metadata = JSON.parse(json) as Record<string, unknown>;
  } catch {
    throw damaged(path, 'its JSON metadata does not parse');
  }
  return { version, uuid, dump: { version: 2, metadata }, dataOffset: luks2DataOffset(metadata), token: findDiskToken(metadata), volumeToken: findVolumeToken(metadata) };
}

/** LUKS1 keyslots: active marker, iterations, salt, key material offset, stripes; 48 bytes each from 208. */
function luks1Keyslots(header: Buffer): KeyslotKdf[] {
  const slots: KeyslotKdf[] = [];
  for (let slot = 0; slot < LUKS1_KEYSLOTS; slot++) {
    const at = LUKS1_KEYSLOT_AT + slot * LUKS1_KEYSLOT_BYTES;
    if (header.readUInt32BE(at) === LUKS1_ACTIVE) slots.push({ slot, type: 'pbkdf2', iterations: header.readUInt32BE(at + 4) });
  }
  return slots;
}

/** The first segment's offset (a decimal string of bytes, as the LUKS2 format stores it). */
function luks2DataOffset(metadata: Record<string, unknown>): number | undefined {
  const segments = metadata['segments'];
  if (typeof segments !== 'object' || segments === null) return undefined;
  const first = (segments as Record<string, unknown>)['0'];
  const offset = typeof first === 'object' && first !== null ? (first as Record<string, unknown>)['offset'] : undefined;
  return typeof offset === 'string' && /^\d+$/.test(offset) ? Number(offset) : undefined;
}

async function readOrFail(ops: DeviceOps, path: string, offset: number, length: number): Promise<Buffer> {
  try {
    return await ops.read(path, offset, length);
  } catch (err) {
    throw luksError('E_DEVICE_UNREADABLE', `Cannot read the header area of ${path} (${readFailure(err)}); refusing to decide whether it holds LUKS`, { cause: err, details: { device: path } });
  }
}

const damaged = (path: string, why: string) =>
  luksError('E_LUKS_HEADER', `The LUKS header of ${path} is damaged (${why}); refusing to use it. Restore it from a header backup (cryptsetup luksHeaderRestore)`, { details: { device: path } });

/** errno for an OS error; the whole reason for a read refused because its I/O would hang. */
export function readFailure(err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'DEVICE_SUSPENDED' || code === 'READ_TIMEOUT') return (err as Error).message;
  return code ?? String(err);
}
