/**
 * luks.helper_socket: the shipped units' split. systemd runs the helper as
 * root on its own socket (here systemd-socket-activate does, with the
 * unit's `--listen --allow-user`), and portcullisd runs as an ordinary user
 * from its first instruction, as `User=` makes it: it starts no helper, it
 * connects to that one. A daemon that is not root and has no helper socket
 * refuses to start, rather than start a helper that could open nothing.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { FIXED_KEY_ID } from '../../src/keyclient/backends/fixed.js';
import { lookupAccount } from '../../src/daemon/privileges.js';
import { startDaemonProcess, type DaemonProcess } from '../fixtures/daemon.js';
import { helperBinary } from '../helper/process.js';

const uidOf = (pid: number): number => Number(/^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? -1);
const childrenOf = (pid: number): string =>
  readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim();
const fixedKey = { backend: 'fixed', fixed: { key: 'ab'.repeat(32), allow_insecure: true } };

describe('luks.helper_socket: a daemon that never was root, and a helper systemd runs', { skip: process.getuid?.() !== 0 ? 'needs root to run the helper and to be another user' : false }, () => {
  const nobody = lookupAccount('nobody');
  let dir: string;
  let helperSocket: string;
  let loop: string | undefined;
  let helper: ChildProcess | undefined;
  let helperLog = '';
  let daemon: DaemonProcess;

  /** The helper as portcullis-helper.service runs it: root, socket-activated, one allowed user. */
  async function startHelper(): Promise<void> {
    rmSync(helperSocket, { force: true });
    helperLog = '';
    helper = spawn('systemd-socket-activate', ['-l', helperSocket, helperBinary('plain'), '--listen', '--allow-user', 'nobody'], { stdio: ['ignore', 'ignore', 'pipe'] });
    helper.stderr?.on('data', (d: Buffer) => (helperLog += d.toString()));
    for (let i = 0; i < 100 && !existsSync(helperSocket); i++) await sleep(50);
    assert.ok(existsSync(helperSocket), `no helper socket: ${helperLog}`);
    // SocketUser=portcullis: the file lets the daemon's user connect; SO_PEERCRED then decides.
    chownSync(helperSocket, nobody.uid, nobody.gid);
  }
  async function stopHelper(): Promise<void> {
    const h = helper;
    if (h === undefined || h.exitCode !== null) return;
    const gone = new Promise((resolve) => h.once('exit', resolve));
    h.kill('SIGKILL');
    await gone;
  }
  const attach = (name: string) => daemon.call('PUT', `/v1/volumes/${name}`, { device: loop, provider: 'plain', key: { id: FIXED_KEY_ID }, project_id: 'p1' });
  const codeOf = (body: unknown) => (body as { error?: { code?: string } }).error?.code;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'portcullisd-helper-socket-'));
    chownSync(dir, nobody.uid, nobody.gid);
    helperSocket = join(dir, 'helper.sock');
    const backing = join(dir, 'blank.img');
    writeFileSync(backing, Buffer.alloc(8 << 20));
    loop = execFileSync('losetup', ['-f', '--show', backing], { encoding: 'utf8' }).trim();
    await startHelper();
    daemon = await startDaemonProcess({
      dir,
      as: { uid: nobody.uid, gid: nobody.gid },
      config: { key_manager: fixedKey, luks: { helper_socket: helperSocket }, runtime: { volumes_file: join(dir, 'volumes.json') }, log: { format: 'json' } },
    });
  });
  after(async () => {
    await daemon?.stop();
    await stopHelper();
    if (loop !== undefined) execFileSync('losetup', ['-d', loop]);
    rmSync(dir, { recursive: true, force: true });
  });

  it('the daemon runs as its user, starts no helper, and greets the one at the socket', () => {
    const pid = daemon.child.pid ?? 0;
    assert.equal(uidOf(pid), nobody.uid);
    assert.equal(childrenOf(pid), '', 'no child process');
    assert.match(daemon.log(), /"privileged helper ready"[^\n]*portcullis-helper at [^\n]*helper\.sock/);
  });

  it('an attach reaches the root-owned device through the helper, which the daemon alone could not open', async () => {
    const answer = await attach('sock-plain');
    assert.ok(answer.status === 200 || codeOf(answer.body) === 'E_DM_UNAVAILABLE', `${answer.status} ${answer.text}`);
    // Without device-mapper on this host, the refusal must still be the helper's (it read the device), not EACCES.
    if (answer.status !== 200) assert.match(answer.text, /privileged helper/);
    if (answer.status === 200) assert.equal((await daemon.call('DELETE', '/v1/volumes/sock-plain')).status, 200);
  });

  it('a restarted helper is reached again on the next request, without restarting the daemon', async () => {
    await stopHelper();
    await startHelper();
    // The listing asks the helper every time (LIST); the daemon learns of the hang-up asynchronously, so the first ask may still meet the dead connection.
    let answer = await daemon.call('GET', '/v1/volumes');
    for (let i = 0; i < 20 && !helperLog.includes('"op":"LIST"'); i++) {
      await sleep(50);
      answer = await daemon.call('GET', '/v1/volumes');
    }
    assert.match(helperLog, /"op":"LIST"/, `the new helper was never asked: ${answer.text}`);
    assert.ok(answer.status === 200 || codeOf(answer.body) === 'E_DM_UNAVAILABLE', `${answer.status} ${answer.text}`);
    assert.equal(childrenOf(daemon.child.pid ?? 0), '', 'still no child process');
  });

  it('a daemon that is not root and has no helper socket does not start, and names the setting', async () => {
    const other = mkdtempSync(join(tmpdir(), 'portcullisd-nosocket-'));
    chownSync(other, nobody.uid, nobody.gid);
    try {
      await assert.rejects(
        startDaemonProcess({ dir: other, as: { uid: nobody.uid, gid: nobody.gid }, config: { key_manager: fixedKey, runtime: { volumes_file: join(other, 'volumes.json') }, log: { format: 'json' } } }),
        (err: Error) => /E_HELPER_UNAVAILABLE/.test(err.message) && /luks\.helper_socket/.test(err.message),
      );
    } finally {
      rmSync(other, { recursive: true, force: true });
    }
  });

  it('a helper socket nobody listens on: the daemon does not start, and says which unit to look at', async () => {
    const other = mkdtempSync(join(tmpdir(), 'portcullisd-nohelper-'));
    chownSync(other, nobody.uid, nobody.gid);
    try {
      await assert.rejects(
        startDaemonProcess({ dir: other, as: { uid: nobody.uid, gid: nobody.gid }, config: { key_manager: fixedKey, luks: { helper_socket: join(other, 'absent.sock') }, runtime: { volumes_file: join(other, 'volumes.json') }, log: { format: 'json' } } }),
        (err: Error) => /E_HELPER_UNAVAILABLE/.test(err.message) && /portcullis-helper\.socket/.test(err.message),
      );
    } finally {
      rmSync(other, { recursive: true, force: true });
    }
  });
});
