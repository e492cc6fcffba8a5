import { chmodSync, chownSync, lstatSync, mkdirSync, readFileSync, unlinkSync } from 'node:fs';
import type { Server } from 'node:http';
import { connect } from 'node:net';
import { dirname } from 'node:path';
import { daemonError } from './errors.js';
import type { SocketOptions } from '../config/daemon-options.js';

export interface Listening {
  path: string;
  /** "bound" when portcullisd created the socket, "systemd" when it was handed one (LISTEN_FDS). */
  how: 'bound' | 'systemd';
  /** Whether a stale socket was replaced. */
  replacedStale: boolean;
}

/** systemd socket activation passes fds from 3 on, for this pid only. */
const SD_LISTEN_FDS_START = 3;

/**
 * Listens on the configured unix socket. A stale socket (nothing answers) is
 * replaced; a live one means another daemon owns it, and we refuse rather
 * than steal its clients. The socket is created 0600 (umask) and only then
 * opened up to the configured mode and group, so no one connects in between.
 */
export async function listenSocket(server: Server, options: SocketOptions, env: NodeJS.ProcessEnv = process.env): Promise<Listening> {
  if (env['LISTEN_PID'] === String(process.pid) && Number(env['LISTEN_FDS'] ?? '0') >= 1) {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ fd: SD_LISTEN_FDS_START }, () => resolve());
    });
    return { path: options.path, how: 'systemd', replacedStale: false };
  }
  const gid = options.group === undefined ? undefined : resolveGroup(options.group);
  try {
    mkdirSync(dirname(options.path), { recursive: true, mode: 0o755 });
  } catch (err) {
    throw daemonError('E_SOCKET_SETUP', `Cannot create the socket directory ${dirname(options.path)} (${(err as NodeJS.ErrnoException).code ?? 'error'})`, { cause: err });
  }
  assertPrivateDirectory(dirname(options.path));
  const replacedStale = await clearStale(options.path);
  const umask = process.umask(0o177);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(options.path, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (err) {
    throw daemonError('E_SOCKET_SETUP', `Cannot listen on ${options.path} (${(err as NodeJS.ErrnoException).code ?? 'error'})`, { cause: err, details: { path: options.path } });
  } finally {
    process.umask(umask);
  }
  try {
    if (gid !== undefined) chownSync(options.path, -1, gid);
    chmodSync(options.path, options.mode);
  } catch (err) {
    server.close();
    throw daemonError('E_SOCKET_SETUP', `Cannot set mode ${options.mode.toString(8)} / group ${String(options.group)} on ${options.path} (${(err as NodeJS.ErrnoException).code ?? 'error'})`, { cause: err });
  }
  return { path: options.path, how: 'bound', replacedStale };
}

/**
 * The socket's directory must be ours alone: whoever else may write it can
 * replace the socket (or the volume records beside it) under us, as in a
 * predictable directory under /tmp that someone made first.
 * @throws E_SOCKET_SETUP naming what is wrong
 */
function assertPrivateDirectory(dir: string): void {
  const st = lstatSync(dir);
  const uid = process.getuid?.() ?? st.uid;
  let problem: string | undefined;
  if (st.isSymbolicLink()) problem = 'is a symlink';
  else if (!st.isDirectory()) problem = 'is not a directory';
  else if (st.uid !== uid) problem = `is owned by uid ${st.uid}, not ${uid}`;
  else if ((st.mode & 0o022) !== 0) problem = `is writable by others (mode ${(st.mode & 0o777).toString(8)})`;
  if (problem !== undefined) {
    throw daemonError('E_SOCKET_SETUP', `The socket directory ${dir} ${problem}; refusing to use it (choose a directory of this user's own, e.g. /run/portcullis)`, { details: { dir } });
  }
}

async function clearStale(path: string): Promise<boolean> {
  let isSocket: boolean;
  try {
    isSocket = lstatSync(path).isSocket();
  } catch {
    return false; // nothing there
  }
  if (!isSocket) throw daemonError('E_SOCKET_SETUP', `${path} exists and is not a socket; refusing to replace it`, { details: { path } });
  const alive = await new Promise<boolean>((resolve) => {
    const probe = connect(path);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (alive) throw daemonError('E_SOCKET_IN_USE', `Another portcullisd answers on ${path}; refusing to start a second one (systemctl status portcullis)`, { details: { path } });
  unlinkSync(path);
  return true;
}

/** Group name or gid → gid, from /etc/group (no NSS in Node; service groups are local). */
export function resolveGroup(group: string | number, groupFile = '/etc/group'): number {
  if (typeof group === 'number') return group;
  if (/^\d+$/.test(group)) return Number(group);
  for (const line of readFileSync(groupFile, 'utf8').split('\n')) {
    const [name, , gid] = line.split(':');
    if (name === group && gid !== undefined) return Number(gid);
  }
  throw daemonError('E_SOCKET_SETUP', `Group "${group}" for the socket does not exist in ${groupFile}; create it (systemd-sysusers) or fix socket.group`, { details: { group } });
}
