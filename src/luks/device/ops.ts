import { readFileSync } from 'node:fs';
import { lstat, open, readdir, readFile, realpath, rename, stat, symlink, unlink } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import { localRunner, type CommandRunner, type RunOptions, type RunResult } from '../commands/runner.js';
import { semaphore } from '../../util/semaphore.js';

/**
 * The privileged operations src/luks asks of the host, and nothing more:
 * stat a device, read bytes of it, read sysfs, run a command with stdin,
 * and point os-brick's attachment symlink. In production they run in this
 * process (no process spawned for a question the kernel answers through a
 * syscall); in tests the VM's guest agent serves the same implementation,
 * so the harness exercises the production code path. This is also the
 * privilege-separation seam (os-brick's privsep): keep it narrow and typed.
 *
 * Operating-system failures reject with an error carrying the errno name in
 * `code` (EIO, EACCES), the way node:fs does, whichever side ran them; a
 * read refused because its I/O would hang says DEVICE_SUSPENDED or
 * READ_TIMEOUT there.
 */
export interface DeviceOps {
  /** Runs argv (no shell); the key, if any, only ever in `stdin`. */
  run(argv: readonly string[], options?: RunOptions): Promise<RunResult>;
  /** realpath and stat of `path`; undefined when nothing is there. */
  stat(path: string): Promise<DeviceStat | undefined>;
  /** Up to `length` bytes at `offset` (fewer at the end of the device). */
  read(path: string, offset: number, length: number): Promise<Buffer>;
  /**
   * Reads `length` bytes from the start of `path` in chunks, without
   * shipping them: how many bytes the device had (fewer at its end) and
   * where the first non-zero byte is, if any. The blank check before a
   * format covers everything the format will write (16 MiB for LUKS2).
   */
  scanZeros(path: string, length: number): Promise<ZeroScan>;
  /**
   * Small text files (sysfs attributes), each trimmed; undefined for one that cannot be read. One round trip for many.
   * @throws EMFILE, ENFILE, ENOMEM (the process, not the file, is short of something)
   */
  readFiles(paths: readonly string[]): Promise<Array<string | undefined>>;
  /** A directory's entries (a sysfs directory); undefined when it does not exist. */
  list(dir: string): Promise<string[] | undefined>;
  /**
   * Points the symlink `link` at `target`, atomically (a new link renamed
   * over the old). Only ever a symlink: a device node there is left alone.
   * @returns why it did not, or undefined when it did
   */
  replaceSymlink(link: string, target: string): Promise<string | undefined>;
}

export interface DeviceStat {
  /** Symlinks resolved. */
  path: string;
  block: boolean;
  /** "major:minor" of a device node; null for anything else. */
  rdev: string | null;
  /** `path` as given was itself a symlink. */
  symlink: boolean;
}

export interface ZeroScan {
  /** Bytes read: `length`, or fewer when the device is smaller. */
  scanned: number;
  /** Offset of the first non-zero byte; undefined when all read as zeros. */
  firstNonZero: number | undefined;
}

/** Linux's dev_t encoding (glibc's gnu_dev_major/minor): 12 bits of major, 20 of minor, split. */
export function formatRdev(rdev: bigint): string {
  const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn);
  const minor = (rdev & 0xffn) | ((rdev >> 12n) & ~0xffn);
  return `${major}:${minor}`;
}

const missing = (err: unknown): boolean => {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ENOTDIR' || code === 'ENODEV' || code === 'ENXIO';
};

/** Out of descriptors or memory: no answer about the file, so never read as "cannot be read". */
const exhausted = (err: unknown): boolean => {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'EMFILE' || code === 'ENFILE' || code === 'ENOMEM';
};

/** Reads at most this much in one call: a header, the first MiB for the blank check. */
export const MAX_READ_BYTES = 16 * 1024 * 1024;
/** A zero scan covers at most this much: the largest span a LUKS format writes is 16 MiB. */
export const MAX_SCAN_BYTES = 64 * 1024 * 1024;
const SCAN_CHUNK = 1024 * 1024;
const ZEROS = Buffer.alloc(SCAN_CHUNK);

export interface LocalOpsOptions {
  /** A device read that has not finished by then is answered READ_TIMEOUT (it may go on in the kernel). @default 10000 */
  readTimeoutMs?: number;
  /**
   * Device reads in flight at once; more wait their turn (within the read
   * timeout). A read of a device whose I/O hangs (a multipath device
   * queueing with no path) holds a libuv pool thread until the kernel lets
   * go; capping device reads below the pool's 4 threads keeps the rest of
   * the daemon's file I/O alive whatever the devices do. @default 2
   */
  maxReads?: number;
}

const opError = (code: string, message: string) => Object.assign(new Error(message), { code });

/** The operations on this host, in-process; commands through `runner`. */
export function localDeviceOps(runner: CommandRunner = localRunner(), options: LocalOpsOptions = {}): DeviceOps {
  const readTimeoutMs = options.readTimeoutMs ?? 10_000;
  const slots = semaphore(options.maxReads ?? 2);

  /** I/O to a suspended dm device waits until it is resumed: never start one (sysfs says, without touching the device). */
  async function refuseSuspended(path: string): Promise<void> {
    const st = await stat(path, { bigint: true });
    if (!st.isBlockDevice()) return;
    const suspended = await readFile(`/sys/dev/block/${formatRdev(st.rdev)}/dm/suspended`, 'utf8').catch(() => '0');
    if (suspended.trim() === '1') throw opError('DEVICE_SUSPENDED', `${path} is a suspended device-mapper device: its I/O would hang until \`dmsetup resume\``);
  }

  async function readAt(path: string, offset: number, length: number): Promise<Buffer> {
    const handle = await open(path, 'r');
    try {
      const buffer = Buffer.alloc(length);
      let got = 0;
      while (got < length) {
        const { bytesRead } = await handle.read(buffer, got, length - got, offset + got);
        if (bytesRead === 0) break;
        got += bytesRead;
      }
      return buffer.subarray(0, got);
    } finally {
      await handle.close();
    }
  }

  async function read(path: string, offset: number, length: number): Promise<Buffer> {
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0 || length > MAX_READ_BYTES) {
      throw opError('EINVAL', `read of ${length} bytes at ${offset} is out of range`);
    }
    await refuseSuspended(path);
    let abandoned = false;
    // The slot is given back when the read really ends, not at the timeout: a hung read keeps holding its thread.
    const attempt = slots.with(() => (abandoned ? Promise.reject(opError('READ_TIMEOUT', 'abandoned')) : readAt(path, offset, length)));
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        abandoned = true;
        const queued = slots.active >= (options.maxReads ?? 2) ? `; ${slots.active} device read(s) still running` : '';
        reject(opError('READ_TIMEOUT', `reading ${path} did not finish within ${readTimeoutMs} ms (hung I/O${queued})`));
      }, readTimeoutMs);
    });
    try {
      return await Promise.race([attempt, timeout]);
    } finally {
      clearTimeout(timer);
      attempt.catch(() => undefined);
    }
  }

  return {
    run: (argv, options) => runner.run(argv, options),

    async stat(path) {
      const link = await lstat(path).catch((err: unknown) => {
        if (missing(err)) return undefined;
        throw err;
      });
      if (link === undefined) return undefined;
      let real: string;
      try {
        real = await realpath(path);
      } catch (err) {
        if (missing(err)) return undefined; // a dangling symlink
        throw err;
      }
      const st = await stat(real, { bigint: true });
      const block = st.isBlockDevice();
      return { path: real, block, rdev: block || st.isCharacterDevice() ? formatRdev(st.rdev) : null, symlink: link.isSymbolicLink() };
    },

    read,

    async scanZeros(path, length) {
      if (!Number.isSafeInteger(length) || length < 0 || length > MAX_SCAN_BYTES) throw opError('EINVAL', `a zero scan of ${length} bytes is out of range`);
      let scanned = 0;
      while (scanned < length) {
        const chunk = await read(path, scanned, Math.min(SCAN_CHUNK, length - scanned));
        // memcmp against zeros; the byte loop only to name the offset.
        const at = chunk.equals(ZEROS.subarray(0, chunk.length)) ? -1 : chunk.findIndex((byte) => byte !== 0);
        if (at !== -1) return { scanned: scanned + chunk.length, firstNonZero: scanned + at };
        scanned += chunk.length;
        if (chunk.length === 0) break;
      }
      return { scanned, firstNonZero: undefined };
    },

    async readFiles(paths) {
      // One file at a time, synchronously: sysfs and procfs attributes are kernel memory and
      // answer at once, and reading them all in parallel held one descriptor per file. A
      // storm of 64 detaches, each scanning every dm-N/dm/name, ran out of descriptors, and
      // an unreadable name read as "no such mapping": the detach answered closed: false and
      // forgot a mapping that stayed open.
      return paths.map((p) => {
        try {
          return readFileSync(p, 'utf8').trim();
        } catch (err) {
          if (exhausted(err)) throw err;
          return undefined;
        }
      });
    },

    async list(dir) {
      return readdir(dir).catch((err: unknown) => {
        if (missing(err)) return undefined;
        throw err;
      });
    },

    async replaceSymlink(link, target) {
      const st = await lstat(link).catch(() => undefined);
      if (st === undefined) return 'the device path does not exist';
      if (!st.isSymbolicLink()) return 'the device path is not a symlink';
      const temp = join(dirname(link), `.portcullis-${randomBytes(6).toString('hex')}`);
      try {
        await symlink(target, temp);
        await rename(temp, link);
        return undefined;
      } catch (err) {
        await unlink(temp).catch(() => undefined);
        return (err as Error).message;
      }
    },
  };
}
