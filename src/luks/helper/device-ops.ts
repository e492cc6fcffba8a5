import { MAX_READ_BYTES, MAX_SCAN_BYTES, type DeviceOps } from '../device/ops.js';
import type { HelperClient } from './client.js';
import { Op, Tag, text, type Response } from './frame.js';

/**
 * DeviceOps for a daemon that holds no device privileges: what needs the
 * block devices (reading a header or a blank check, os-brick's symlink in
 * /dev) goes to the privileged helper; what any user may ask the kernel
 * (stat a node, sysfs) stays in-process. No command runs in this mode:
 * `run` refuses, so a code path that still spawns one fails loudly in tests
 * instead of quietly costing a process per attach.
 */
export interface HelperDeviceOpsOptions {
  /** A device read that has not finished by then is answered READ_TIMEOUT (the helper's thread may go on in the kernel). @default 10000 */
  readTimeoutMs?: number;
}

/** The errno-style codes DeviceOps promises (as node:fs raises them), from the helper's statuses. */
const readCodes: Record<number, string> = { 1: 'EINVAL', 2: 'ENOENT', 3: 'ENXIO', 7: 'EIO', 8: 'ENOMEM', 10: 'DEVICE_SUSPENDED' };

function readFailure(r: Response, what: string): Error {
  const code = readCodes[r.status] ?? 'EIO';
  return Object.assign(new Error(`${what}: ${text(r, Tag.MESSAGE) ?? code}`), { code });
}

export function helperDeviceOps(client: HelperClient, local: DeviceOps, options: HelperDeviceOpsOptions = {}): DeviceOps {
  const readTimeoutMs = options.readTimeoutMs ?? 10_000;
  const call = async (op: number, fields: Parameters<HelperClient['call']>[1], what: string): Promise<Response> => {
    try {
      return await client.call(op, fields, what, readTimeoutMs);
    } catch (err) {
      if ((err as { code?: string }).code === 'E_CRYPTSETUP_TIMEOUT') throw Object.assign(new Error(`${what} did not finish within ${readTimeoutMs} ms (hung I/O)`), { code: 'READ_TIMEOUT' });
      throw err;
    }
  };

  return {
    run(argv) {
      return Promise.reject(Object.assign(new Error(`${argv[0] ?? 'a command'} was asked for while the privileged helper drives the devices; nothing runs commands in this mode`), { code: 'ENOSYS' }));
    },
    stat: (path) => local.stat(path),
    readFiles: (paths) => local.readFiles(paths),
    list: (dir) => local.list(dir),
    async read(path, offset, length) {
      if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0 || length > MAX_READ_BYTES) {
        throw Object.assign(new Error(`read of ${length} bytes at ${offset} is out of range`), { code: 'EINVAL' });
      }
      const r = await call(Op.READ, [[Tag.PATH, path], [Tag.OFFSET, { u64: offset }], [Tag.LENGTH, { u64: length }]], `reading ${path}`);
      if (r.status !== 0) throw readFailure(r, `reading ${path}`);
      return Buffer.from(r.fields.get(Tag.DATA) ?? Buffer.alloc(0));
    },
    async scanZeros(path, length) {
      if (!Number.isSafeInteger(length) || length < 0 || length > MAX_SCAN_BYTES) throw Object.assign(new Error(`a zero scan of ${length} bytes is out of range`), { code: 'EINVAL' });
      const r = await call(Op.SCAN_ZEROS, [[Tag.PATH, path], [Tag.LENGTH, { u64: length }]], `scanning ${path}`);
      if (r.status !== 0) throw readFailure(r, `scanning ${path}`);
      const scan = JSON.parse(text(r, Tag.JSON) ?? '{}') as { scanned: number; first_non_zero: number | null };
      return { scanned: scan.scanned, firstNonZero: scan.first_non_zero ?? undefined };
    },
    async replaceSymlink(link, target) {
      const r = await client.call(Op.SYMLINK, [[Tag.LINK, link], [Tag.PATH, target]], `point ${link} at ${target}`);
      return r.status === 0 ? undefined : (text(r, Tag.MESSAGE) ?? `the helper refused (status ${r.status})`);
    },
  };
}
