/**
 * What portcullis.service leaves the daemon, tried for real: portcullisd runs
 * under setpriv(1) as an unprivileged user (the unit's User=portcullis; a
 * spare uid here), with exactly the unit's CapabilityBoundingSet= and
 * AmbientCapabilities= (read from the unit, so the test follows it), the KEK
 * as a systemd-style credential its user owns, its socket group set by
 * itself, and the privileged helper reached at luks.helper_socket, run as
 * root by systemd-socket-activate as portcullis-helper.socket would.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from '../fixtures/daemon.js';
import { helperBinary } from '../helper/process.js';
import { daemonIsReady, daemonMain, isRoot, repoRoot, spawnDaemon, tempDir, writeConfig } from './helpers.js';

const NOBODY = 65534;
/** The daemon's user, standing in for portcullis (which this host need not have). */
const DAEMON_UID = 4244;
const SOCKET_GID = 4242;
const AGENT_GID = 4243;
/** linux/capability.h */
const CAP_BITS: Record<string, number> = { CAP_CHOWN: 0, CAP_DAC_OVERRIDE: 1, CAP_IPC_LOCK: 14, CAP_SYS_ADMIN: 21 };

/** A capability directive of the shipped unit, e.g. CapabilityBoundingSet= → ['CAP_IPC_LOCK']. */
function unitCapabilities(key: 'CapabilityBoundingSet' | 'AmbientCapabilities'): string[] {
  const unit = readFileSync(join(repoRoot, 'systemd', 'portcullis.service.in'), 'utf8');
  const line = new RegExp(`^${key}=(.*)$`, 'm').exec(unit);
  assert.ok(line?.[1], `the unit sets ${key}=`);
  return line[1].trim().split(/\s+/);
}

/** setpriv's spelling: -all,+ipc_lock,... */
const capList = (caps: string[]) => caps.map((c) => `+${c.replace(/^CAP_/, '').toLowerCase()}`).join(',');
const boundingSet = (caps: string[]) => ['-all', ...caps.map((c) => `+${c.replace(/^CAP_/, '').toLowerCase()}`)].join(',');

function effectiveCapabilities(pid: number): bigint {
  const match = /^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  assert.ok(match?.[1]);
  return BigInt(`0x${match[1]}`);
}

/** GET path as uid nobody with the given supplementary groups (setpriv), from a child; resolves the HTTP status. */
/**
 * A GET as uid nobody with `groups`. With `change`, the peer's supplementary groups differ between what
 * the kernel recorded at connect() and what /proc/PID/status shows when the daemon accepts: the daemon
 * (pid `change.daemonPid`) is stopped while the peer connects, switches to `change.groupsAfterConnect`
 * (it keeps CAP_SETGID for that, as an ambient capability) and sends its request; then it is continued.
 */
async function statusAsNobody(socketPath: string, groups: number[], path: string, change?: { daemonPid: number; groupsAfterConnect: number[] }): Promise<number> {
  const script = `
    const [socketPath, path, after] = process.argv.slice(1);
    const socket = require('node:net').connect(socketPath, () => {
      if (after !== '') process.setgroups(after.split(',').map(Number));
      const req = require('node:http').request({ createConnection: () => socket, path }, (res) => { res.resume(); res.on('end', () => process.stdout.write(String(res.statusCode))); });
      req.on('error', (e) => process.stdout.write('error ' + e.code));
      req.end(() => process.stderr.write('sent\\n'));
    });
    socket.on('error', (e) => process.stdout.write('error ' + e.code));`;
  const keepSetgid = change === undefined ? [] : ['--inh-caps=+setgid', '--ambient-caps=+setgid'];
  const argv = [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, `--groups=${groups.join(',')}`, ...keepSetgid, '--', process.execPath, '-e', script, socketPath, path, (change?.groupsAfterConnect ?? []).join(',')];
  if (change !== undefined) process.kill(change.daemonPid, 'SIGSTOP');
  try {
    const child = spawn('/usr/bin/setpriv', argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    const sent = new Promise<void>((resolve) =>
      child.stderr.on('data', (c: Buffer) => {
        err += c.toString();
        if (err.includes('sent\n')) resolve();
      }),
    );
    const closed = new Promise<number>((resolve, reject) => {
      child.on('error', reject);
      child.on('close', () => (/^\d+$/.test(out) ? resolve(Number(out)) : reject(new Error(`peer printed "${out}" ${err}`))));
    });
    if (change !== undefined) {
      await Promise.race([sent, closed]);
      process.kill(change.daemonPid, 'SIGCONT');
    }
    return await closed;
  } finally {
    if (change !== undefined) process.kill(change.daemonPid, 'SIGCONT');
  }
}

describe("portcullisd as the unit runs it: its user, its capabilities, its helper", { skip: !isRoot && 'needs root (setpriv, chown, other uids)' }, () => {
  const caps = unitCapabilities('CapabilityBoundingSet');
  const ambient = unitCapabilities('AmbientCapabilities');
  let dir: string;
  let credentials: string;
  let helperSocket: string;
  let helper: ChildProcess;

  before(async () => {
    dir = tempDir('capabilities');
    chmodSync(dir, 0o755); // a peer running as nobody must reach the socket
    credentials = join(dir, 'credentials');
    mkdirSync(credentials, { mode: 0o700 });
    // As systemd hands a LoadCredential= file over: 0400, owned by the service's user.
    writeFileSync(join(credentials, 'kek'), randomBytes(32), { mode: 0o400 });
    chownSync(credentials, DAEMON_UID, SOCKET_GID);
    chownSync(join(credentials, 'kek'), DAEMON_UID, SOCKET_GID);
    // portcullis-helper.socket and .service: root, --listen, the daemon's user the one allowed; the socket file its.
    helperSocket = join(dir, 'helper.sock');
    helper = spawn('systemd-socket-activate', ['-l', helperSocket, helperBinary('plain'), '--listen', '--allow-uid', String(DAEMON_UID)], { stdio: 'ignore' });
    for (let i = 0; i < 100 && !existsSync(helperSocket); i++) await sleep(50);
    assert.ok(existsSync(helperSocket), 'the helper listens');
    chownSync(helperSocket, DAEMON_UID, SOCKET_GID);
  });
  after(() => {
    helper?.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  function config(sub: string, socketGroup = SOCKET_GID): string {
    const home = join(dir, sub);
    // As StateDirectory= makes it: the daemon's user's.
    mkdirSync(home, { mode: 0o755 });
    chownSync(home, DAEMON_UID, SOCKET_GID);
    return writeConfig(home, {
      key_manager: { backend: 'local', local: { path: join(home, 'keystore.db'), kek_credential: 'kek' } },
      socket: { path: join(home, 'portcullis.sock'), mode: '0660', group: socketGroup },
      roles: { agent: { gids: [AGENT_GID] } },
      luks: { helper_socket: helperSocket },
    });
  }
  /** portcullisd as User=/Group= with the unit's bounding and ambient sets; `groups` its supplementary groups. */
  const asUnit = (cfg: string, groups = [SOCKET_GID]) =>
    spawnDaemon(
      ['/usr/bin/setpriv', `--reuid=${DAEMON_UID}`, `--regid=${groups[0] ?? SOCKET_GID}`, `--groups=${groups.join(',')}`, `--inh-caps=${capList(ambient)}`, `--ambient-caps=${capList(ambient)}`, `--bounding-set=${boundingSet(caps)}`, '--', process.execPath, daemonMain, '--config', cfg],
      { CREDENTIALS_DIRECTORY: credentials },
    );

  it('the unit leaves the daemon CAP_IPC_LOCK alone (ambient, for a user that is not root): no CAP_SYS_ADMIN, CAP_DAC_OVERRIDE or CAP_CHOWN', () => {
    assert.deepEqual(caps, ['CAP_IPC_LOCK']);
    assert.deepEqual(ambient, caps);
  });

  it('starts as its user with only that capability, reaches its helper, opens the keystore with the KEK credential, and sets its socket group and mode', async (t) => {
    const cfg = config('full');
    const daemon = asUnit(cfg);
    t.after(() => daemon.stop('SIGKILL'));
    await daemon.waitForLog(daemonIsReady);
    const status = readFileSync(`/proc/${daemon.pid}/status`, 'utf8');
    assert.match(status, new RegExp(`^Uid:\\s+${DAEMON_UID}\\s+${DAEMON_UID}\\s+${DAEMON_UID}\\s+${DAEMON_UID}$`, 'm'));
    const expected = caps.reduce((mask, c) => mask | (1n << BigInt(CAP_BITS[c] ?? Number.NaN)), 0n);
    assert.equal(effectiveCapabilities(daemon.pid), expected, "the daemon runs with exactly the unit's capabilities");
    assert.equal(readFileSync(`/proc/${daemon.pid}/task/${daemon.pid}/children`, 'utf8').trim(), '', 'it starts no helper of its own');
    const socketPath = join(dir, 'full', 'portcullis.sock');
    const st = statSync(socketPath);
    assert.deepEqual([st.gid, st.mode & 0o777], [SOCKET_GID, 0o660]);
    const health = await request(socketPath, 'GET', '/v1/health');
    const checks = (health.body as { checks?: Record<string, { ok: boolean; detail: string }> }).checks;
    assert.equal(checks?.['key_manager']?.ok, true, health.text);
    // The version comes from the helper's greeting: the daemon reached it as the helper's allowed user.
    assert.match(checks?.['cryptsetup']?.detail ?? '', /^cryptsetup \d/, health.text);
    assert.equal(await daemon.stop(), 0);
  });

  it('authorises a peer of another uid by the supplementary groups it had at connect() (SO_PEERGROUPS), never those /proc/PID/status shows later, without CAP_DAC_OVERRIDE', async (t) => {
    const cfg = config('peers');
    const daemon = asUnit(cfg);
    t.after(() => daemon.stop('SIGKILL'));
    await daemon.waitForLog(daemonIsReady);
    const socketPath = join(dir, 'peers', 'portcullis.sock');
    // The socket group lets both connect; only the agent group (supplementary, not primary) grants the role.
    assert.equal(await statusAsNobody(socketPath, [SOCKET_GID], '/v1/health'), 403);
    assert.ok([200, 503].includes(await statusAsNobody(socketPath, [SOCKET_GID, AGENT_GID], '/v1/health')));
    // Groups changed between connect() and the daemon's accept(): the ones at connect() decide, as SO_PEERGROUPS recorded them.
    const left = await statusAsNobody(socketPath, [SOCKET_GID, AGENT_GID], '/v1/health', { daemonPid: daemon.pid, groupsAfterConnect: [SOCKET_GID] });
    assert.ok([200, 503].includes(left), `the agent group left after connect(): ${left}`);
    const joined = await statusAsNobody(socketPath, [SOCKET_GID], '/v1/health', { daemonPid: daemon.pid, groupsAfterConnect: [SOCKET_GID, AGENT_GID] });
    assert.equal(joined, 403, 'the agent group joined after connect()');
    assert.equal(await daemon.stop(), 0);
  });

  it('without CAP_CHOWN cannot give its socket a group its user is not in, and refuses to start (E_SOCKET_SETUP)', async (t) => {
    const cfg = config('foreign-group', AGENT_GID);
    const daemon = asUnit(cfg, [SOCKET_GID]);
    t.after(() => daemon.stop('SIGKILL'));
    assert.equal(await daemon.exited, 1, daemon.log());
    assert.match(daemon.log(), new RegExp(`E_SOCKET_SETUP: Cannot set mode 660 / group ${AGENT_GID} on .*\\(EPERM\\)`));
  });
});
