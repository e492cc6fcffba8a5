/**
 * The capabilities portcullis.service leaves the daemon, tried for real:
 * portcullisd runs under setpriv(1) with exactly the unit's
 * CapabilityBoundingSet= (read from the unit, so the test follows it), the
 * KEK as a systemd-style credential, and its socket group set by itself.
 * What this host cannot show (device-mapper ioctls need CAP_SYS_ADMIN) is
 * argued in the unit's comments, not tested here.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { request } from '../fixtures/daemon.js';
import { daemonIsReady, daemonMain, isRoot, repoRoot, spawnDaemon, tempDir, writeConfig } from './helpers.js';

const NOBODY = 65534;
const SOCKET_GID = 4242;
const AGENT_GID = 4243;
/** linux/capability.h */
const CAP_BITS: Record<string, number> = { CAP_CHOWN: 0, CAP_DAC_OVERRIDE: 1, CAP_IPC_LOCK: 14, CAP_SYS_ADMIN: 21 };

/** CapabilityBoundingSet= of the shipped unit, e.g. ['CAP_SYS_ADMIN', 'CAP_IPC_LOCK', 'CAP_CHOWN']. */
function unitCapabilities(): string[] {
  const unit = readFileSync(join(repoRoot, 'systemd', 'portcullis.service.in'), 'utf8');
  const line = /^CapabilityBoundingSet=(.*)$/m.exec(unit);
  assert.ok(line?.[1], 'the unit sets CapabilityBoundingSet=');
  return line[1].trim().split(/\s+/);
}

/** setpriv's spelling: -all,+sys_admin,+ipc_lock,... */
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

describe("portcullisd with the unit's capability bounding set", { skip: !isRoot && 'needs root (setpriv, chown, other uids)' }, () => {
  const caps = unitCapabilities();
  let dir: string;
  let credentials: string;

  before(() => {
    dir = tempDir('capabilities');
    chmodSync(dir, 0o755); // a peer running as nobody must reach the socket
    credentials = join(dir, 'credentials');
    mkdirSync(credentials, { mode: 0o700 });
    // As systemd hands a LoadCredential= file over: 0400, owned by the service's user.
    writeFileSync(join(credentials, 'kek'), randomBytes(32), { mode: 0o400 });
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  function config(sub: string): string {
    const home = join(dir, sub);
    mkdirSync(home, { mode: 0o755 });
    return writeConfig(home, {
      key_manager: { backend: 'local', local: { path: join(home, 'keystore.db'), kek_credential: 'kek' } },
      socket: { path: join(home, 'portcullis.sock'), mode: '0660', group: SOCKET_GID },
      roles: { agent: { gids: [AGENT_GID] } },
    });
  }

  it('leaves out CAP_DAC_OVERRIDE and keeps CAP_CHOWN', () => {
    assert.ok(!caps.includes('CAP_DAC_OVERRIDE'), caps.join(' '));
    assert.ok(caps.includes('CAP_CHOWN'), caps.join(' '));
  });

  it('starts with only those capabilities, opens the keystore with the KEK credential, and sets its socket group and mode', async (t) => {
    const cfg = config('full');
    const daemon = spawnDaemon(['/usr/bin/setpriv', `--bounding-set=${boundingSet(caps)}`, '--', process.execPath, daemonMain, '--config', cfg], {
      CREDENTIALS_DIRECTORY: credentials,
    });
    t.after(() => daemon.stop('SIGKILL'));
    await daemon.waitForLog(daemonIsReady);
    const expected = caps.reduce((mask, c) => mask | (1n << BigInt(CAP_BITS[c] ?? Number.NaN)), 0n);
    assert.equal(effectiveCapabilities(daemon.pid), expected, 'the daemon runs with exactly the unit\'s capabilities');
    const socketPath = join(dir, 'full', 'portcullis.sock');
    const st = statSync(socketPath);
    assert.deepEqual([st.gid, st.mode & 0o777], [SOCKET_GID, 0o660]);
    const health = await request(socketPath, 'GET', '/v1/health');
    assert.equal((health.body as { checks?: { key_manager?: { ok: boolean } } }).checks?.key_manager?.ok, true, health.text);
    assert.equal(await daemon.stop(), 0);
  });

  it('authorises a peer of another uid by the supplementary groups it had at connect() (SO_PEERGROUPS), never those /proc/PID/status shows later, without CAP_DAC_OVERRIDE', async (t) => {
    const cfg = config('peers');
    const daemon = spawnDaemon(['/usr/bin/setpriv', `--bounding-set=${boundingSet(caps)}`, '--', process.execPath, daemonMain, '--config', cfg], {
      CREDENTIALS_DIRECTORY: credentials,
    });
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

  it('without CAP_CHOWN cannot give its socket the configured group and refuses to start (E_SOCKET_SETUP)', async (t) => {
    const cfg = config('no-chown');
    const daemon = spawnDaemon(['/usr/bin/setpriv', `--bounding-set=${boundingSet(caps.filter((c) => c !== 'CAP_CHOWN'))}`, '--', process.execPath, daemonMain, '--config', cfg], {
      CREDENTIALS_DIRECTORY: credentials,
    });
    t.after(() => daemon.stop('SIGKILL'));
    assert.equal(await daemon.exited, 1, daemon.log());
    assert.match(daemon.log(), new RegExp(`E_SOCKET_SETUP: Cannot set mode 660 / group ${SOCKET_GID} on .*\\(EPERM\\)`));
  });
});
