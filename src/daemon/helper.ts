import type { Config } from '../config/schema.js';
import type { CryptOps } from '../luks/crypt/crypt-ops.js';
import { helperCryptOps } from '../luks/crypt/helper.js';
import type { DeviceOps } from '../luks/device/ops.js';
import { helperClient, type HelperClient } from '../luks/helper/client.js';
import { helperDeviceOps } from '../luks/helper/device-ops.js';
import { Op, PROTOCOL_VERSION, Tag, text } from '../luks/helper/frame.js';
import type { DaemonDeps } from './daemon.js';
import { daemonError } from './errors.js';
import type { Logger } from './log.js';

export interface ConnectedHelper {
  client: HelperClient;
  crypt: CryptOps;
  /** The device operations with what needs the devices sent to the helper. */
  ops(local: DeviceOps): DeviceOps;
}

/**
 * With `luks.via: helper`, starts the privileged helper (or, with
 * luks.helper_socket, connects to the one systemd runs) and greets it before
 * the daemon adopts or serves anything: a daemon that cannot reach its
 * helper does not start (it could open nothing), and says why.
 */
export async function connectHelper(config: Config, deps: Pick<DaemonDeps, 'helper' | 'allocator'>, log: Logger): Promise<ConnectedHelper | undefined> {
  if (config.luks.via !== 'helper') return undefined;
  const start = deps.helper;
  if (start === undefined) {
    throw daemonError('E_HELPER_UNAVAILABLE', 'luks.via is helper, but this build has no privileged helper; set luks.via: cryptsetup or install portcullis-helper');
  }
  const socket = config.luks.helper_socket;
  // A helper started by a process that is not root could answer HELLO and then open no device: refuse now, not at the first attach.
  if (socket === undefined && process.getuid?.() !== 0) {
    throw daemonError('E_HELPER_UNAVAILABLE', `portcullisd runs as uid ${process.getuid?.() ?? '?'}, not root, so a helper it started could open no device; set luks.helper_socket to the socket of the helper systemd runs (portcullis-helper.socket: /run/portcullis-helper/helper.sock), or start portcullisd as root`);
  }
  // The helper writes one JSON object per line (never a key), kept whole as one field of one line.
  const helperLog = (line: string): void => log.info('helper', { helper: line.slice(0, 4000) });
  let started = 0;
  const client = helperClient({
    connect: () => {
      // Only root can start a helper that can do its work; after runtime.user, a lost helper is the end of this daemon's usefulness.
      if (socket === undefined && started > 0 && config.runtime.user !== undefined && process.getuid?.() !== 0) {
        throw daemonError('E_HELPER_UNAVAILABLE', 'the privileged helper exited, and portcullisd, having given up root (runtime.user), cannot start another; restart portcullisd (systemd does, Restart=on-failure)');
      }
      started++;
      return start({ path: config.luks.helper_path, socket, symlinkDirs: config.luks.symlink_dirs, log: helperLog });
    },
    allocator: deps.allocator,
    timeoutMs: config.limits.command_timeout_seconds * 1000,
  });
  let hello: { protocol?: number; helper?: string; libcryptsetup?: string };
  try {
    const r = await client.call(Op.HELLO, [], 'greet the privileged helper', 30_000);
    if (r.status !== 0) throw new Error(text(r, Tag.MESSAGE) ?? `status ${r.status}`);
    hello = JSON.parse(text(r, Tag.JSON) ?? '{}') as typeof hello;
    if (hello.protocol !== PROTOCOL_VERSION) throw new Error(`it speaks protocol ${String(hello.protocol)}, this daemon ${PROTOCOL_VERSION}`);
  } catch (err) {
    client.close();
    throw daemonError('E_HELPER_UNAVAILABLE', `the privileged helper did not answer (${err instanceof Error ? err.message : String(err)}); ${socket === undefined ? 'check luks.helper_path and that portcullisd runs as root' : `check that portcullis-helper.socket is active (systemctl status portcullis-helper.socket) and that the helper allows this daemon's user (--allow-user)`}`, { cause: err });
  }
  log.info('privileged helper ready', { where: client.where, protocol: hello.protocol ?? null, helper_version: hello.helper ?? null, libcryptsetup: hello.libcryptsetup ?? null });
  return { client, crypt: helperCryptOps(client), ops: (local) => helperDeviceOps(client, local) };
}
