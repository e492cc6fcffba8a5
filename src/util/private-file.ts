import { closeSync, constants, fstatSync, fsyncSync, openSync, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';

/**
 * Files the daemon keeps (the volume records beside its socket, Barbican's
 * secret metadata) may sit in a directory others can write, such as /tmp: a
 * predictable name there must never be followed as a symlink, nor believed
 * when someone else made it.
 */

/**
 * Reads a file only if it is a regular file (not a symlink), owned by this
 * process' user, and writable by no one else.
 * @throws an Error saying which of those it is not (ENOENT passes through)
 */
export function readPrivateFile(path: string): string {
  const fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new Error(`${path} is not a regular file`);
    const uid = process.getuid?.() ?? st.uid;
    if (st.uid !== uid) throw new Error(`${path} is owned by uid ${st.uid}, not ${uid}`);
    if ((st.mode & 0o022) !== 0) throw new Error(`${path} is writable by others (mode ${(st.mode & 0o777).toString(8)})`);
    return readFileSync(fd, 'utf8');
  } finally {
    closeSync(fd);
  }
}

/**
 * Write-then-rename through a fresh temporary file: O_EXCL|O_NOFOLLOW, so a
 * planted file or symlink is removed, never written through. The file is
 * fsynced before the rename and the directory after it, so a power cut
 * leaves the old content or the new, never an empty file.
 */
export function writePrivateFile(path: string, text: string, mode = 0o600): void {
  const tmp = `${path}.tmp`;
  const flags = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;
  let fd: number;
  try {
    fd = openSync(tmp, flags, mode);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    // Left by a crash, or planted: unlink removes a symlink itself, not what it points at.
    unlinkSync(tmp);
    fd = openSync(tmp, flags, mode);
  }
  try {
    writeSync(fd, text);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
  const dir = openSync(dirname(path), constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    fsyncSync(dir);
  } finally {
    closeSync(dir);
  }
}
