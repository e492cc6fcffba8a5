import type { DeviceIdentity } from '../device/identity.js';
import { luksError, type LuksErrorCode } from '../errors.js';
import type { LuksHeader } from '../header/read.js';
import { findDiskToken } from '../header/token.js';
import { findVolumeToken } from '../header/volume-token.js';
import type { HelperClient } from '../helper/client.js';
import { Flag, i32, Op, Tag, text, type Fields, type Response } from '../helper/frame.js';
import type { MappingStatus } from '../mapping/status.js';
import type { Pbkdf } from '../options.js';
import { parseVersion } from './cli.js';
import type { CryptOps } from './crypt-ops.js';

/**
 * CryptOps through the privileged helper (docs/helper-protocol.md):
 * libcryptsetup in a long-lived process, no process per operation, header
 * verdicts from crypt_load itself. The helper checks every argument again;
 * this side only builds the request and names its failures in the
 * driver's codes.
 */

/** The helper's statuses in the driver's codes (the table in docs/helper-protocol.md). */
const statusCodes: Record<number, LuksErrorCode> = {
  1: 'E_LUKS_INVALID_ARGUMENT',
  2: 'E_DEVICE_NOT_FOUND',
  3: 'E_DEVICE_CHANGED',
  4: 'E_WRONG_KEY',
  5: 'E_DEVICE_BUSY',
  6: 'E_DEVICE_WRONG',
  7: 'E_CRYPTSETUP_FAILED',
  8: 'E_CRYPTSETUP_NOMEM',
  9: 'E_DM_UNAVAILABLE',
  10: 'E_CRYPTSETUP_FAILED',
  11: 'E_CRYPTSETUP_FAILED',
  12: 'E_CRYPTSETUP_FAILED',
};
export const HelperStatus = { OK: 0, EINVAL: 1, NOT_FOUND: 2, WRONG_KEY: 4, NOT_LUKS: 6, IO: 7, SUSPENDED: 10 } as const;

/** The failure a response stands for, worded for an operator. */
export function helperFailure(r: Response, what: string): Error {
  const message = text(r, Tag.MESSAGE) ?? 'no reason given';
  const errno = i32(r, Tag.ERRNO);
  return luksError(statusCodes[r.status] ?? 'E_CRYPTSETUP_FAILED', `the privileged helper could not ${what}: ${message}`, {
    details: { command: 'portcullis-helper', status: r.status, ...(errno === undefined ? {} : { errno }) },
  });
}

const device = (d: DeviceIdentity): Fields => [
  [Tag.PATH, d.path],
  [Tag.RDEV, d.rdev],
];

function pbkdfFields(pbkdf: Pbkdf): Fields {
  const out: Array<readonly [number, Fields[number][1]]> = [[Tag.PBKDF, pbkdf.type]];
  if (pbkdf.iterations !== undefined) out.push([Tag.ITERATIONS, { u32: pbkdf.iterations }]);
  if (pbkdf.memoryKiB !== undefined) out.push([Tag.MEMORY_KIB, { u32: pbkdf.memoryKiB }]);
  return out;
}

interface HeaderJson {
  type: 'LUKS1' | 'LUKS2';
  uuid: string;
  data_offset?: number;
  keyslots?: Array<{ slot: number; state?: string; pbkdf?: string; iterations?: number; memory_kib?: number }>;
  tokens?: Array<{ id: number; json: string }>;
}

/** The helper's HEADER answer as the driver's LuksHeader; LUKS2's metadata holds what the driver reads of it (keyslot KDFs, tokens). */
export function headerFromJson(h: HeaderJson): LuksHeader {
  const slots = (h.keyslots ?? []).filter((k) => k.state === undefined || k.state === 'active');
  const kdfs = slots.map((k) => ({ slot: k.slot, type: k.pbkdf ?? 'unknown', iterations: k.iterations ?? 0, ...(k.memory_kib === undefined ? {} : { memoryKiB: k.memory_kib }) }));
  const dataOffset = h.data_offset;
  if (h.type === 'LUKS1') return { version: 1, uuid: h.uuid, dump: { version: 1, keyslots: kdfs }, dataOffset, token: undefined, volumeToken: undefined };
  const tokens: Record<string, unknown> = {};
  for (const t of h.tokens ?? []) {
    try {
      tokens[String(t.id)] = JSON.parse(t.json) as unknown;
    } catch {
      // A token that is not JSON is libcryptsetup's to refuse, not ours to read.
    }
  }
  const keyslots = Object.fromEntries(kdfs.map((k) => [String(k.slot), { kdf: { type: k.type, ...(k.type === 'pbkdf2' ? { iterations: k.iterations } : { time: k.iterations }), ...(k.memoryKiB === undefined ? {} : { memory: k.memoryKiB }) } }]));
  const metadata = { keyslots, tokens };
  return { version: 2, uuid: h.uuid, dump: { version: 2, metadata }, dataOffset, token: findDiskToken(metadata), volumeToken: findVolumeToken(metadata) };
}

interface StatusJson {
  type: string | null;
  cipher?: string;
  key_bits?: number;
  device?: string;
  device_rdev?: string;
  offset_sectors?: number;
  size_sectors?: number;
  flags?: string[];
  open_count?: number;
  suspended?: boolean;
}

export function helperCryptOps(client: HelperClient): CryptOps {
  async function ok(op: number, fields: Fields, what: string): Promise<Response> {
    const r = await client.call(op, fields, what);
    if (r.status !== HelperStatus.OK) throw helperFailure(r, what);
    return r;
  }
  const json = <T>(r: Response): T => JSON.parse(text(r, Tag.JSON) ?? 'null') as T;
  const slotOf = (r: Response): number => i32(r, Tag.SLOT) ?? -1;
  const versionOf = (v: 1 | 2): string => (v === 1 ? 'luks1' : 'luks2');

  async function status(name: string): Promise<StatusJson | undefined> {
    const r = await client.call(Op.STATUS, [[Tag.NAME, name]], `read the status of ${name}`);
    if (r.status === HelperStatus.NOT_FOUND) return undefined;
    if (r.status !== HelperStatus.OK) throw helperFailure(r, `read the status of ${name}`);
    return json<StatusJson>(r);
  }

  let noWorkqueue: Promise<boolean> | undefined;
  const self: CryptOps = {
    via: 'helper',
    async open(req) {
      let flags = 0;
      if (req.readOnly) flags |= Flag.READ_ONLY;
      if (req.allowDiscards) flags |= Flag.ALLOW_DISCARDS;
      if (req.noWorkqueue) flags |= Flag.NO_READ_WORKQUEUE | Flag.NO_WRITE_WORKQUEUE;
      const fields: Array<Fields[number]> = [[Tag.TYPE, req.type === 'luks' ? 'luks1' : req.type], ...device(req.device), [Tag.NAME, req.name], [Tag.KEY, req.passphrase], [Tag.FLAGS, { u32: flags }]];
      if (req.cipher !== undefined) fields.push([Tag.CIPHER, req.cipher]);
      if (req.keySize !== undefined) fields.push([Tag.KEY_BITS, { u32: req.keySize }]);
      await ok(Op.OPEN, fields, `open ${req.device.path} as ${req.type} mapping ${req.name}`);
    },
    async close(name, deferred) {
      const r = await client.call(Op.CLOSE, [[Tag.NAME, name], [Tag.FLAGS, { u32: deferred ? Flag.DEFERRED : 0 }]], `close ${name}`);
      if (r.status === HelperStatus.NOT_FOUND) return false;
      if (r.status !== HelperStatus.OK) throw helperFailure(r, `close ${name}`);
      return true;
    },
    async resize(name, passphrase) {
      await ok(Op.RESIZE, [[Tag.NAME, name], [Tag.KEY, passphrase]], `resize ${name}`);
    },
    async format(req) {
      const fields: Array<Fields[number]> = [[Tag.TYPE, req.version], ...device(req.device), [Tag.KEY, req.passphrase], ...pbkdfFields(req.pbkdf)];
      if (req.cipher !== undefined) fields.push([Tag.CIPHER, req.cipher]);
      if (req.keySize !== undefined) fields.push([Tag.KEY_BITS, { u32: req.keySize }]);
      if (req.label !== undefined && req.version === 'luks2') fields.push([Tag.LABEL, req.label]);
      if (req.tokenJson !== undefined) fields.push([Tag.TOKEN_JSON, req.tokenJson]);
      await ok(Op.FORMAT, fields, `format ${req.device.path} as ${req.version}`);
    },
    async erase(d) {
      await ok(Op.ERASE, device(d), `erase the keyslots of ${d.path}`);
    },
    async testKey(d, passphrase) {
      const r = await client.call(Op.KEY_TEST, [...device(d), [Tag.KEY, passphrase]], `test a key against ${d.path}`);
      if (r.status === HelperStatus.WRONG_KEY) return undefined;
      if (r.status !== HelperStatus.OK) throw helperFailure(r, `test a key against ${d.path}`);
      return slotOf(r);
    },
    async changeKey(d, _version, old, next, pbkdf) {
      await ok(Op.KEY_CHANGE, [...device(d), [Tag.KEY, old], [Tag.NEW_KEY, next], ...pbkdfFields(pbkdf)], `rewrite a keyslot of ${d.path}`);
    },
    async addKey(d, version, existing, next, pbkdf) {
      return slotOf(await ok(Op.KEY_ADD, [...device(d), [Tag.KEY, existing], [Tag.NEW_KEY, next], ...pbkdfFields(pbkdf)], `add a ${versionOf(version)} keyslot to ${d.path}`));
    },
    async removeKey(d, slot) {
      await ok(Op.KEY_REMOVE, [...device(d), [Tag.SLOT, { i32: slot }]], `destroy keyslot ${slot} of ${d.path}`);
    },
    async setToken(d, tokenJson, tokenId) {
      return slotOf(await ok(Op.TOKEN_SET, [...device(d), [Tag.TOKEN_JSON, tokenJson], [Tag.SLOT, { i32: tokenId ?? -1 }]], `store a token in the LUKS2 header of ${d.path}`));
    },
    async header(d) {
      const r = await client.call(Op.HEADER, device(d), `read the LUKS header of ${d.path}`);
      if (r.status === HelperStatus.NOT_LUKS) return undefined;
      // A read error is never "no header": doubt must not lead to a format.
      if (r.status === HelperStatus.IO || r.status === HelperStatus.SUSPENDED) {
        throw luksError('E_DEVICE_UNREADABLE', `Cannot read the LUKS header of ${d.path} (${text(r, Tag.MESSAGE) ?? 'I/O error'})`, { details: { device: d.path } });
      }
      if (r.status !== HelperStatus.OK) throw helperFailure(r, `read the LUKS header of ${d.path}`);
      return headerFromJson(json<HeaderJson>(r));
    },
    async describe(name) {
      const s = await status(name);
      if (s === undefined) return undefined;
      const flags = s.flags ?? [];
      const view: MappingStatus = { name, mapperPath: `/dev/mapper/${name}`, readOnly: flags.includes('readonly'), inUse: (s.open_count ?? 0) > 0, flags, suspended: s.suspended === true };
      if (s.type !== null) view.type = s.type;
      if (s.cipher !== undefined) view.cipher = s.cipher;
      if (s.key_bits !== undefined) view.keySizeBits = s.key_bits;
      if (s.device !== undefined) view.device = s.device;
      if (s.device_rdev !== undefined) view.deviceRdev = s.device_rdev;
      if (s.offset_sectors !== undefined) view.offsetSectors = s.offset_sectors;
      if (s.size_sectors !== undefined) view.sizeSectors = s.size_sectors;
      return view;
    },
    async list() {
      return json<string[]>(await ok(Op.LIST, [], 'list crypt mappings'));
    },
    async openCount(name) {
      return (await status(name))?.open_count ?? 0;
    },
    async cryptTarget() {
      const t = json<Record<string, number[]>>(await ok(Op.TARGETS, [], 'list device-mapper targets'));
      return t['crypt']?.join('.');
    },
    supportsNoWorkqueue() {
      // libcryptsetup 2.6 has the flags; the kernel needs dm-crypt ≥ 1.22 (Linux 5.9). Asked once per helper client.
      return (noWorkqueue ??= self.cryptTarget().then((v) => {
        const crypt = /^(\d+)\.(\d+)/.exec(v ?? '');
        return crypt !== null && (Number(crypt[1]) > 1 || Number(crypt[2]) >= 22);
      }));
    },
    async removeHalfCreated(name) {
      const r = await client.call(Op.REMOVE_EMPTY, [[Tag.NAME, name]], `remove the half-created mapping ${name}`);
      if (r.status === HelperStatus.EINVAL || r.status === HelperStatus.NOT_FOUND) return false;
      if (r.status !== HelperStatus.OK) throw helperFailure(r, `remove the half-created mapping ${name}`);
      return true;
    },
    async makeNode(name) {
      // libcryptsetup makes the node itself (through udev, or directly without it): a missing one is a host fault to report.
      throw luksError('E_CRYPTSETUP_FAILED', `/dev/mapper/${name} is missing after the helper opened it; is udev running? (\`dmsetup mknodes ${name}\` repairs it)`, { details: { name } });
    },
    async probe(d, purpose) {
      const r = await client.call(Op.PROBE, device(d), `probe ${d.path} for signatures`);
      if (r.status !== HelperStatus.OK) {
        throw luksError('E_DEVICE_UNREADABLE', `Cannot probe ${d.path} for signatures (${text(r, Tag.MESSAGE) ?? `status ${r.status}`}); refusing to ${purpose}`, { details: { device: d.path } });
      }
      const p = json<{ type: string | null; pttype: string | null; usage: string | null; offset: number | null }>(r);
      const kind = p.type ?? p.pttype ?? p.usage;
      return kind === null ? undefined : { kind, offset: p.offset ?? undefined };
    },
    async version() {
      const hello = json<{ libcryptsetup: string }>(await ok(Op.HELLO, [], 'greet the privileged helper'));
      return parseVersion(hello.libcryptsetup);
    },
  };
  return self;
}
