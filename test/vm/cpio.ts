/**
 * A writer for the "newc" cpio format the kernel unpacks as an initramfs.
 * Written here rather than shelling out to cpio(1), which is not installed
 * everywhere, and to get byte-identical archives for identical inputs.
 */
export type CpioEntry =
  | { kind: 'dir'; path: string; mode?: number }
  | { kind: 'file'; path: string; data: Buffer; mode?: number }
  | { kind: 'char'; path: string; major: number; minor: number; mode?: number };

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFCHR = 0o020000;

const pad4 = (n: number): Buffer => Buffer.alloc((4 - (n % 4)) % 4);
const hex8 = (n: number): string => n.toString(16).padStart(8, '0');

function record(ino: number, path: string, mode: number, data: Buffer, rdev: [number, number] = [0, 0]): Buffer[] {
  const name = Buffer.from(`${path}\0`, 'utf8');
  const fields = [ino, mode, 0, 0, 1, 0, data.length, 0, 0, rdev[0], rdev[1], name.length, 0];
  const header = Buffer.from(`070701${fields.map(hex8).join('')}`, 'ascii');
  return [header, name, pad4(header.length + name.length), data, pad4(data.length)];
}

/** Archive of `entries` in order (parents before children), with the trailer. */
export function cpioNewc(entries: readonly CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  entries.forEach((e, i) => {
    const ino = i + 1;
    if (e.kind === 'dir') parts.push(...record(ino, e.path, S_IFDIR | (e.mode ?? 0o755), Buffer.alloc(0)));
    else if (e.kind === 'file') parts.push(...record(ino, e.path, S_IFREG | (e.mode ?? 0o644), e.data));
    else parts.push(...record(ino, e.path, S_IFCHR | (e.mode ?? 0o600), Buffer.alloc(0), [e.major, e.minor]));
  });
  parts.push(...record(0, 'TRAILER!!!', 0, Buffer.alloc(0)));
  return Buffer.concat(parts);
}
