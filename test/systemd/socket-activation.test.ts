/**
 * Socket activation as portcullis.socket does it, with systemd's own
 * systemd-socket-activate(1): it binds the socket, waits for the first
 * client, then execs portcullisd (same pid) with LISTEN_FDS=1 and
 * LISTEN_PID, the socket on fd 3.
 */
import assert from 'node:assert/strict';
import { chmodSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { request } from '../fixtures/daemon.js';
import { daemonIsReady, daemonMain, spawnDaemon, tempDir, writeConfig, type RunningDaemon } from './helpers.js';

describe('portcullisd under systemd-socket-activate', () => {
  let dir: string;
  let socketPath: string;
  let activator: RunningDaemon;
  let inodeBefore: number;
  let firstAnswer: Awaited<ReturnType<typeof request>>;

  before(async () => {
    dir = tempDir('socket-activation');
    chmodSync(dir, 0o755);
    socketPath = join(dir, 'portcullis.sock');
    // The config names the same path, as /etc/portcullis/portcullis.yaml names portcullis.socket's.
    const config = writeConfig(dir, { socket: { path: socketPath, mode: '0600' } });
    activator = spawnDaemon(['/usr/bin/systemd-socket-activate', '-l', socketPath, process.execPath, daemonMain, '--config', config]);
    await activator.waitForLog((log) => log.includes(`Listening on ${socketPath} as 3.`));
    inodeBefore = statSync(socketPath).ino;
    // Nothing runs portcullisd yet: this request is what starts it, and waits in the backlog meanwhile.
    firstAnswer = await request(socketPath, 'GET', '/v1/health');
    await activator.waitForLog(daemonIsReady);
  });
  after(async () => {
    await activator?.stop('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  it('answers the connection that started it, made before the daemon was running', () => {
    assert.ok([200, 503].includes(firstAnswer.status), `status ${firstAnswer.status}: ${firstAnswer.text}`);
    assert.equal((firstAnswer.body as { backend?: string }).backend, 'local');
  });

  it('is the process systemd-socket-activate became, so LISTEN_PID names it', () => {
    const cmdline = readFileSync(`/proc/${activator.pid}/cmdline`, 'utf8').split('\0');
    assert.ok(cmdline.includes(daemonMain), cmdline.join(' '));
  });

  it('logs that it took the socket from systemd, under the configured path', () => {
    const ready = activator.entries().find((e) => e['message'] === 'portcullisd ready');
    assert.ok(ready, activator.log());
    assert.equal(ready['via'], 'systemd');
    assert.equal(ready['socket'], socketPath);
  });

  it("listens on systemd's socket as it is: same inode, the activator's mode, not socket.mode", () => {
    const st = statSync(socketPath);
    assert.equal(st.ino, inodeBefore, 'the daemon did not replace the socket');
    assert.notEqual(st.mode & 0o777, 0o600, 'socket.mode is not applied to a socket systemd made');
  });

  it('serves further connections on it', async () => {
    // Health, because it answers on any host (503 where this one has no device-mapper).
    const answers = await Promise.all([1, 2, 3].map(() => request(socketPath, 'GET', '/v1/health')));
    assert.deepEqual(answers.map((a) => (a.body as { backend?: string }).backend), ['local', 'local', 'local']);
  });

  it('stops cleanly on SIGTERM, leaving the socket file to its owner', async () => {
    assert.equal(await activator.stop('SIGTERM'), 0);
    assert.match(activator.log(), /"message":"portcullisd stopped"/);
    assert.equal(statSync(socketPath).ino, inodeBefore);
  });
});
