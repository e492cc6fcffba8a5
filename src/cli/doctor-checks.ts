import { accessSync, constants, existsSync, lstatSync, readFileSync, statSync, type Stats } from 'node:fs';
import { dirname } from 'node:path';
import type { Config } from '../config/schema.js';
import type { HealthAnswer } from '../api/wire.js';
import { isPortcullisError } from '../errors.js';
import type { CommandRunner } from '../luks/commands/runner.js';
import type { SocketTarget } from './daemon-session.js';

/**
 * The checks of `portcullis doctor`, each a finding with a fix hint. They
 * look at this host only (files, commands, the socket) and never change
 * anything; each one reports rather than throws, so one broken thing never
 * hides the others.
 */

export type Verdict = 'ok' | 'warn' | 'fail';

export interface Finding {
  verdict: Verdict;
  check: string;
  detail: string;
  /** What to do about it; absent when there is nothing to do. */
  hint?: string;
}

const finding = (verdict: Verdict, check: string, detail: string, hint?: string): Finding =>
  hint === undefined ? { verdict, check, detail } : { verdict, check, detail, hint };

const COMMAND_TIMEOUT_MS = 30_000;

function firstLine(text: string): string {
  return text.trim().split('\n')[0]?.trim() ?? '';
}

function errnoOf(err: unknown): string {
  return (err as NodeJS.ErrnoException).code ?? (err instanceof Error ? err.message : String(err));
}

export async function checkCryptsetup(runner: CommandRunner): Promise<Finding> {
  let out;
  try {
    out = await runner.run(['cryptsetup', '--version'], { timeoutMs: COMMAND_TIMEOUT_MS });
  } catch (err) {
    return finding('fail', 'cryptsetup', `cannot run cryptsetup (${errnoOf(err)})`, 'apt install cryptsetup-bin (or cryptsetup)');
  }
  const text = out.stdout.toString('utf8');
  if (out.code !== 0) {
    return finding('fail', 'cryptsetup', `cryptsetup --version failed (exit ${String(out.code)}): ${firstLine(out.stderr.toString('utf8'))}`, 'reinstall cryptsetup-bin');
  }
  const match = /cryptsetup (\d+)\.(\d+)\.(\d+)/.exec(text);
  if (match === null) return finding('warn', 'cryptsetup', `cannot read a version in "${firstLine(text)}"`, 'check that /usr/sbin/cryptsetup is cryptsetup');
  const version = `${match[1]}.${match[2]}.${match[3]}`;
  if (Number(match[1]) < 2) return finding('warn', 'cryptsetup', `cryptsetup ${version}: LUKS2 needs 2.0 or later`, 'upgrade cryptsetup');
  return finding('ok', 'cryptsetup', `cryptsetup ${version}`);
}

export async function checkDmCrypt(runner: CommandRunner): Promise<Finding> {
  if (existsSync('/sys/module/dm_crypt')) return finding('ok', 'dm-crypt', 'dm_crypt module loaded (/sys/module/dm_crypt)');
  let out;
  try {
    out = await runner.run(['dmsetup', 'targets'], { timeoutMs: COMMAND_TIMEOUT_MS });
  } catch (err) {
    return finding('fail', 'dm-crypt', `no /sys/module/dm_crypt, and dmsetup cannot run (${errnoOf(err)})`, 'apt install dmsetup; modprobe dm-crypt');
  }
  const crypt = /^crypt\s+(\S+)/m.exec(out.stdout.toString('utf8'));
  if (crypt !== null) return finding('ok', 'dm-crypt', `device-mapper crypt target ${crypt[1] ?? ''}`.trim());
  const said = firstLine(out.stderr.toString('utf8'));
  return finding(
    'fail',
    'dm-crypt',
    `not available: no /sys/module/dm_crypt, and dmsetup targets lists no crypt${said === '' ? '' : ` (${said})`}`,
    'modprobe dm-crypt (for a container, on its host); without it no volume can attach',
  );
}

/** Group names and ids from /etc/group (no NSS: enough for a local socket group). */
function groups(): Map<string, number> {
  const byName = new Map<string, number>();
  try {
    for (const line of readFileSync('/etc/group', 'utf8').split('\n')) {
      const [name, , gid] = line.split(':');
      if (name !== undefined && name !== '' && gid !== undefined && /^\d+$/.test(gid)) byName.set(name, Number(gid));
    }
  } catch {
    // No /etc/group: groups are shown by number.
  }
  return byName;
}

function groupName(gid: number, byName: Map<string, number>): string | undefined {
  return [...byName].find(([, id]) => id === gid)?.[0];
}

function groupLabel(gid: number, byName: Map<string, number>): string {
  const name = groupName(gid, byName);
  return name === undefined ? `gid ${gid}` : `${name} (gid ${gid})`;
}

const octal = (mode: number) => mode.toString(8).padStart(4, '0');

/** The socket file: there, a socket, with the configured mode and group, and open to this user. */
export function checkSocket(target: SocketTarget, config: Config | undefined): Finding[] {
  let st: Stats;
  try {
    st = lstatSync(target.path);
  } catch (err) {
    const errno = errnoOf(err);
    if (errno === 'ENOENT' || errno === 'ENOTDIR') {
      return [finding('fail', 'socket', `no socket at ${target.path} (${target.origin})`, 'start the daemon: systemctl start portcullis (journalctl -u portcullis -e says why it stopped)')];
    }
    return [finding('fail', 'socket', `cannot look at ${target.path} (${errno})`, `ls -ld ${dirname(target.path)}: your user needs search permission on the directory`)];
  }
  if (!st.isSocket()) return [finding('fail', 'socket', `${target.path} is not a socket (${target.origin})`, 'move it aside; portcullisd refuses to replace it')];
  const byName = groups();
  const mode = st.mode & 0o777;
  const found: Finding[] = [];
  const wantMode = config?.socket.mode;
  if (wantMode !== undefined && mode !== wantMode) {
    found.push(finding('warn', 'socket mode', `${target.path} has mode ${octal(mode)}, socket.mode says ${octal(wantMode)}`, 'restart portcullisd, which sets the mode at start'));
  } else if ((mode & 0o006) !== 0) {
    found.push(finding('warn', 'socket mode', `${target.path} has mode ${octal(mode)}: every local user can connect (roles still decide what they may do)`, 'set socket.mode: "0660" and restart portcullisd'));
  }
  const wantGroup = config?.socket.group;
  const wantGid = typeof wantGroup === 'number' ? wantGroup : wantGroup === undefined ? undefined : byName.get(wantGroup);
  if (wantGroup !== undefined && wantGid === undefined) {
    found.push(finding('warn', 'socket group', `socket.group "${wantGroup}" is not in /etc/group`, `groupadd ${String(wantGroup)}, then restart portcullisd`));
  } else if (wantGid !== undefined && st.gid !== wantGid) {
    found.push(finding('warn', 'socket group', `${target.path} belongs to ${groupLabel(st.gid, byName)}, socket.group says ${String(wantGroup)}`, 'restart portcullisd, which sets the group at start'));
  }
  try {
    accessSync(target.path, constants.W_OK);
  } catch {
    found.push(
      finding(
        'fail',
        'socket access',
        `uid ${process.getuid?.() ?? '?'} may not connect to ${target.path} (mode ${octal(mode)}, group ${groupLabel(st.gid, byName)})`,
        `add your user to the socket's group: usermod -aG ${groupName(st.gid, byName) ?? st.gid} $USER, then log in again`,
      ),
    );
  }
  const summary = `${target.path} (${target.origin}): mode ${octal(mode)}, owner uid ${st.uid}, group ${groupLabel(st.gid, byName)}`;
  return [finding('ok', 'socket', summary), ...found];
}

const daemonCheckNames: Record<string, string> = { cryptsetup: 'daemon: cryptsetup', dm_crypt: 'daemon: dm-crypt', commands: 'daemon: command slots', key_manager: 'backend reachable' };

/** The daemon's own view: GET /v1/health, including whether it reaches the key manager. */
export async function checkDaemon(health: () => Promise<HealthAnswer>): Promise<Finding[]> {
  let h: HealthAnswer;
  try {
    h = await health();
  } catch (err) {
    const code = isPortcullisError(err) ? err.code : 'E_INTERNAL';
    const message = err instanceof Error ? err.message : String(err);
    const hint =
      code === 'E_DAEMON_SOCKET_STALE' ? 'systemctl restart portcullis (journalctl -u portcullis -e says why it died)'
      : code === 'E_DAEMON_SOCKET_DENIED' ? "add your user to the socket's group, or run as root"
      : code === 'E_PEER_FORBIDDEN' ? 'list your uid or group under roles.agent or roles.admin, or run as root'
      : code === 'E_DAEMON_TIMEOUT' ? 'the daemon is stuck or very slow: journalctl -u portcullis -e; raise --timeout'
      : 'journalctl -u portcullis -e';
    return [finding('fail', 'daemon', `${code}: ${message}`, hint)];
  }
  const verdict: Verdict = h.status === 'ok' ? 'ok' : h.status === 'degraded' ? 'warn' : 'fail';
  const found = [finding(verdict, 'daemon', `portcullisd ${h.version}, up ${h.uptime_seconds} s, backend ${h.backend}, ${h.volumes} volume(s), health ${h.status}`)];
  for (const [name, check] of Object.entries(h.checks ?? {})) {
    const hint = check.ok || name !== 'key_manager' ? undefined : 'check that the key manager is up and reachable from this host (key_manager.* in the config); cached keys still attach meanwhile';
    found.push(finding(check.ok ? 'ok' : 'fail', daemonCheckNames[name] ?? `daemon: ${name}`, check.detail, hint));
  }
  return found;
}

/** The local keystore's key-encryption key: present (or to be created), 0600, owned by root, 32 bytes. */
export function checkKek(config: Config): Finding | undefined {
  if (config.key_manager.backend !== 'local') return undefined;
  const local = config.key_manager.local;
  if (local === undefined) return undefined;
  if (local.kek_credential !== undefined) return finding('ok', 'KEK', `from systemd credential ${local.kek_credential} (portcullisd checks it at start)`);
  const path = local.kek_file;
  let st: Stats;
  try {
    st = statSync(path);
  } catch (err) {
    const errno = errnoOf(err);
    if (errno !== 'ENOENT') return finding('warn', 'KEK', `cannot look at ${path} (${errno})`, 'run portcullis doctor as root');
    if (existsSync(local.path)) return finding('fail', 'KEK', `${path} is missing, but keystore ${local.path} exists and needs it`, 'restore the KEK from backup; a new one cannot open the keystore');
    if (!local.create_kek) return finding('fail', 'KEK', `${path} is missing and create_kek is false`, 'restore it from backup, or set create_kek: true for a new keystore');
    return finding('ok', 'KEK', `${path} does not exist yet; portcullisd creates it (0600) on first start`);
  }
  const mode = st.mode & 0o7777;
  if (!st.isFile()) return finding('fail', 'KEK', `${path} is not a regular file`, 'point key_manager.local.kek_file at the 32-byte KEK file');
  if ((mode & 0o077) !== 0) return finding('fail', 'KEK', `${path} has mode ${octal(mode)}: others can read every key in the keystore; portcullisd refuses it`, `chmod 600 ${path}`);
  if (st.size !== 32) return finding('fail', 'KEK', `${path} holds ${st.size} bytes, not 32`, 'is it the right file? restore the KEK from backup');
  if (st.uid !== 0) return finding('warn', 'KEK', `${path} is owned by uid ${st.uid}, not root; portcullisd refuses it unless it runs as that uid`, `chown root:root ${path}`);
  return finding('ok', 'KEK', `${path}: mode ${octal(mode)}, owner root, 32 bytes`);
}
