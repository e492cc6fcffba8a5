import type { DeviceOps } from '../../src/luks/device/ops.js';
import { VmError } from './errors.js';
import type { CommandRunner, OpAnswer } from './runner.js';

/**
 * The device operations over the command channel: the guest agent serves
 * the production implementation (localDeviceOps, in-process in the guest),
 * and the host side is a DeviceOps whose answers come from there. So a test
 * in the VM runs the same code that answers in production, beside the
 * kernel that has the devices; only the transport differs.
 */

const isString = (v: unknown): v is string => typeof v === 'string' && !v.includes('\0');
const isCount = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;

function badArgs(name: string): never {
  throw new VmError('E_RUN_ARGUMENT', `Device operation ${name} got malformed arguments, refusing`);
}

/** Serves `ops` as runner.op(); checks each operation's arguments, since the peer is another process. */
export function serveDeviceOps(ops: DeviceOps): (name: string, args: unknown[]) => Promise<OpAnswer> {
  const json = (value: unknown): OpAnswer => ({ json: value ?? null, body: Buffer.alloc(0) });
  return async (name, args) => {
    const [a, b, c] = args;
    switch (name) {
      case 'stat':
        if (!isString(a)) badArgs(name);
        return json(await ops.stat(a));
      case 'read':
        if (!isString(a) || !isCount(b) || !isCount(c)) badArgs(name);
        return { json: null, body: await ops.read(a, b, c) };
      case 'scanZeros':
        if (!isString(a) || !isCount(b)) badArgs(name);
        return json(await ops.scanZeros(a, b));
      case 'readFiles':
        if (!Array.isArray(a) || !a.every(isString)) badArgs(name);
        return json((await ops.readFiles(a)).map((t) => t ?? null));
      case 'list':
        if (!isString(a)) badArgs(name);
        return json(await ops.list(a));
      case 'replaceSymlink':
        if (!isString(a) || !isString(b)) badArgs(name);
        return json(await ops.replaceSymlink(a, b));
      default:
        throw new VmError('E_RUN_ARGUMENT', `Unknown device operation ${JSON.stringify(name)}, refusing`);
    }
  };
}

/** A DeviceOps served by the runner's peer (the guest agent, directly or through the broker). */
export function remoteDeviceOps(runner: CommandRunner): DeviceOps {
  const op = async (name: string, ...args: unknown[]): Promise<OpAnswer> => {
    if (runner.op === undefined) throw new VmError('E_OP_FAILED', `${runner.where} serves no device operations`);
    try {
      return await runner.op(name, args);
    } catch (err) {
      // An OS error on the peer surfaces as node:fs would raise it here: errno in `code`.
      if (err instanceof VmError && err.code === 'E_OP_FAILED' && typeof err.details.errno === 'string') {
        throw Object.assign(new Error(err.message), { code: err.details.errno });
      }
      throw err;
    }
  };
  const orUndefined = <T>(v: unknown): T | undefined => (v === null ? undefined : (v as T));
  return {
    run: (argv, options) => runner.run(argv, options),
    stat: async (path) => orUndefined((await op('stat', path)).json),
    read: async (path, offset, length) => (await op('read', path, offset, length)).body,
    scanZeros: async (path, length) => {
      const scan = (await op('scanZeros', path, length)).json as { scanned: number; firstNonZero?: number | null };
      return { scanned: scan.scanned, firstNonZero: scan.firstNonZero ?? undefined };
    },
    readFiles: async (paths) => ((await op('readFiles', paths)).json as Array<string | null>).map((t) => t ?? undefined),
    list: async (dir) => orUndefined((await op('list', dir)).json),
    replaceSymlink: async (link, target) => orUndefined((await op('replaceSymlink', link, target)).json),
  };
}
