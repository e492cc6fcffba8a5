/**
 * runtime.user: portcullisd started as root gives root up as soon as its
 * helper answers, and the helper keeps it. Seen from outside, in /proc, on a
 * real daemon process; and through an attach, whose device reads (the
 * probe) only root can make: answered by the helper, not refused as
 * EACCES. (This host may lack device-mapper: the open then fails
 * E_DM_UNAVAILABLE, after the probe succeeded.)
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chownSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { FIXED_KEY_ID } from '../../src/keyclient/backends/fixed.js';
import { lookupAccount } from '../../src/daemon/privileges.js';
import { startDaemonProcess, type DaemonProcess } from '../fixtures/daemon.js';

const uidOf = (pid: number): number => Number(/^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? -1);
const childrenOf = (pid: number): number[] =>
  readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter((p) => p !== '').map(Number);

describe('runtime.user: the daemon gives up root, its helper keeps it', { skip: process.getuid?.() !== 0 ? 'needs root to give it up' : false }, () => {
  const nobody = lookupAccount('nobody');
  let dir: string;
  let loop: string | undefined;
  let daemon: DaemonProcess;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'portcullisd-user-'));
    // What the daemon opens after giving up root is the user's: here, its directory (socket, records).
    chownSync(dir, nobody.uid, nobody.gid);
    const backing = join(dir, 'blank.img');
    writeFileSync(backing, Buffer.alloc(8 << 20));
    loop = execFileSync('losetup', ['-f', '--show', backing], { encoding: 'utf8' }).trim();
    daemon = await startDaemonProcess({
      dir,
      config: {
        key_manager: { backend: 'fixed', fixed: { key: 'ab'.repeat(32), allow_insecure: true } },
        runtime: { user: 'nobody', volumes_file: join(dir, 'volumes.json') },
        log: { format: 'json' },
      },
    });
  });
  after(async () => {
    await daemon?.stop();
    if (loop !== undefined) execFileSync('losetup', ['-d', loop]);
    rmSync(dir, { recursive: true, force: true });
  });

  it('the daemon runs as that user; its helper, started before, stays root', () => {
    const pid = daemon.child.pid ?? 0;
    assert.equal(uidOf(pid), nobody.uid);
    const helpers = childrenOf(pid).filter((p) => readFileSync(`/proc/${p}/comm`, 'utf8').trim() === 'portcullis-help');
    assert.equal(helpers.length, 1, `one helper child of ${pid}`);
    assert.equal(uidOf(helpers[0] ?? 0), 0);
    assert.match(daemon.log(), /"gave up root"/);
  });

  it('an attach still reaches the device: the helper reads it (the probe) as root, where the daemon could not', async () => {
    // The loop device is root's (0660 root:disk): nobody could not open it to probe it.
    const answer = await daemon.call('PUT', '/v1/volumes/user-plain', { device: loop, provider: 'plain', key: { id: FIXED_KEY_ID }, project_id: 'p1' });
    const code = (answer.body as { error?: { code: string } }).error?.code;
    assert.ok(answer.status === 200 || code === 'E_DM_UNAVAILABLE', `${answer.status} ${answer.text}`);
    if (answer.status === 200) assert.equal((await daemon.call('DELETE', '/v1/volumes/user-plain')).status, 200);
  });
});
