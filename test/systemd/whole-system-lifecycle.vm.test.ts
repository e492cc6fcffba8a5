/**
 * The installed daemon's life under systemd on a real kernel (issue 20), in
 * the guest whole-system.vm.test.ts describes: with a LUKS2 volume attached
 * by the agent through socket activation, `systemctl reload` re-reads the
 * config, `systemctl restart` and a SIGKILL (systemd restarting it while a
 * client waits on the socket) adopt the mapping, a restart of the helper's
 * unit is met by the daemon's next request, and the watchdog kills and
 * restarts a stopped event loop, and the journal holds the daemon's JSON lines.
 */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { AGENT_USER, Guest, PROJECT, buildDeb, createKeys, installPortcullis, note } from './whole-system.js';
import { tempDir } from './helpers.js';

interface Attached { name: string; opened: boolean; formatted: boolean; provider: string }
interface Volume { name: string; origin: string; project_id: string | null; key_id: string | null; type: string | null }

let g: Guest;
let dir: string;
const keys = { luks: '' };
const loops = { luks: '' };
const started = Date.now();

before(async () => {
  const deb = buildDeb();
  dir = tempDir('wholesys-life');
  try {
    g = await Guest.boot(join(dir, 'disk.img'));
    await installPortcullis(g, deb.deb);
  } finally {
    deb.remove();
  }
  keys.luks = (await createKeys(g, ['wholesys-life']))[0] ?? '';
  await g.sh('systemctl enable --now portcullis.socket');
  loops.luks = await g.loop('luks.img');
  const luks = await g.agentJson<Attached>(['attach', 'vol-luks', '--device', loops.luks, '--key-id', keys.luks, '--project', PROJECT, '--provider', 'luks2', '--format', 'if-blank']);
  assert.equal(luks.opened, true);
});

after(async () => {
  await g?.vm.stop();
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  note(`whole-system-lifecycle.vm.test wall time ${Date.now() - started} ms`);
});

const mainPid = (): Promise<string> => g.mainPid();
const crypt = async (): Promise<string> => g.sh('dmsetup ls --target crypt');

describe('portcullis installed from its .deb: reload, restart, SIGKILL, watchdog under systemd', () => {
  it('systemctl reload re-reads the config: the agent gains the admin role without a restart', async () => {
    const pid = await mainPid();
    const denied = await g.agent(['cache', 'stats', '--json']);
    assert.equal(denied.code, 1);
    assert.match(denied.stderr.toString(), /E_PEER_FORBIDDEN/);
    const uid = await g.sh(`id -u ${AGENT_USER}`);
    await g.sh(`sed -i 's/^  admin: { uids: \\[0\\] }$/  admin: { uids: [0, ${uid}] }/' /etc/portcullis/portcullis.yaml && grep -q 'uids: \\[0, ${uid}\\]' /etc/portcullis/portcullis.yaml`);
    await g.sh('systemctl reload portcullis.service');
    // systemd 252 does not wait for the daemon's READY=1 after a reload: wait for the config in use.
    for (let i = 0; ; i += 1) {
      const r = await g.agent(['cache', 'stats', '--json']);
      if (r.code === 0) break;
      assert.ok(i < 30, `the agent is still not admin after the reload: ${r.stderr.toString()}`);
      await g.sh('sleep 1');
    }
    assert.equal(await mainPid(), pid, 'reloaded in place');
  });

  it('systemctl restart adopts the attached volume instead of mapping it twice', async () => {
    const before = await crypt();
    const pid = await mainPid();
    await g.sh('systemctl restart portcullis.service', 180_000);
    assert.notEqual(await mainPid(), pid);
    const v = await g.agentJson<Volume>(['volume', 'vol-luks']);
    assert.deepEqual([v.origin, v.project_id, v.key_id], ['adopted', PROJECT, keys.luks]);
    const again = await g.agentJson<Attached>(['attach', 'vol-luks', '--device', loops.luks, '--key-id', keys.luks, '--project', PROJECT, '--provider', 'luks2']);
    assert.equal(again.opened, false, 'idempotent: the adopted mapping is this request');
    assert.equal(await crypt(), before);
  });

  it('systemctl restart portcullis-helper: the daemon, not restarted, reaches the new helper on its next request', async () => {
    const daemonPid = await mainPid();
    const helperPid = await g.mainPid('portcullis-helper.service');
    await g.sh('systemctl restart portcullis-helper.service', 120_000);
    assert.notEqual(await g.mainPid('portcullis-helper.service'), helperPid);
    // Both need the helper: CLOSE, then HEADER and OPEN.
    assert.equal((await g.agentJson<{ closed: boolean }>(['detach', 'vol-luks'])).closed, true);
    const again = await g.agentJson<Attached>(['attach', 'vol-luks', '--device', loops.luks, '--key-id', keys.luks, '--project', PROJECT, '--provider', 'luks2']);
    assert.deepEqual([again.opened, again.formatted], [true, false]);
    assert.equal(await mainPid(), daemonPid, 'the daemon was not restarted');
  });

  it('kill -9: systemd restarts the daemon, a client connecting meanwhile waits on the socket, the mapping is adopted', async () => {
    const pid = await mainPid();
    const { NRestarts: n } = await g.show('portcullis.service', ['NRestarts']);
    // The client connects once the old daemon is gone, before the new one is up (RestartSec=2s, then node's start).
    const out = await g.sh(
      `kill -9 ${pid}; while kill -0 ${pid} 2>/dev/null; do sleep 0.05; done; cut -d' ' -f1 /proc/uptime; ` +
        `setpriv --reuid=${AGENT_USER} --regid=${AGENT_USER} --init-groups curl -sS --max-time 120 --unix-socket /run/portcullis/portcullis.sock http://portcullis/v1/volumes/vol-luks`,
      180_000,
    );
    const [connectedAt = '', body = ''] = out.split('\n');
    const v = JSON.parse(body) as Volume;
    assert.deepEqual([v.name, v.origin, v.project_id], ['vol-luks', 'adopted', PROJECT]);
    const after = await g.show('portcullis.service', ['MainPID', 'NRestarts', 'ActiveEnterTimestampMonotonic']);
    assert.notEqual(after.MainPID, pid);
    assert.equal(Number(after.NRestarts), Number(n) + 1);
    const readyAt = Number(after.ActiveEnterTimestampMonotonic) / 1e6;
    assert.ok(Number(connectedAt) < readyAt, `the client connected at ${connectedAt} s, before the new daemon was ready at ${readyAt} s`);
  });

  it('the watchdog: a stopped event loop is killed and the daemon restarted, adopting the mapping', async () => {
    const pid = await mainPid();
    const { NRestarts: n } = await g.show('portcullis.service', ['NRestarts']);
    await g.sh(`kill -STOP ${pid}`);
    // WatchdogSec=30s: systemd sends SIGABRT past it and restarts the service (Restart=on-failure).
    await g.waitFor('portcullis.service', 'NRestarts', new RegExp(`^${Number(n) + 1}$`), 120_000);
    await g.waitFor('portcullis.service', 'ActiveState', /^active$/, 60_000);
    assert.notEqual(await mainPid(), pid);
    assert.match(await g.sh('journalctl -b -u portcullis.service --no-pager -o cat'), /Watchdog timeout/);
    const v = await g.agentJson<Volume>(['volume', 'vol-luks']);
    assert.equal(v.origin, 'adopted');
  });

  it('logs structured lines to the journal', async () => {
    const entries = await g.journal();
    const lines = entries
      .filter((e) => e._SYSTEMD_UNIT === 'portcullis.service' && typeof e.MESSAGE === 'string' && e.MESSAGE.startsWith('{'))
      .map((e) => JSON.parse(e.MESSAGE as string) as Record<string, unknown>);
    const ready = lines.filter((l) => l.message === 'portcullisd ready');
    assert.ok(ready.length >= 4, 'one ready line per start: activation, restart, kill -9, watchdog');
    assert.equal(ready.at(-1)?.via, 'systemd');
    assert.equal(ready.at(-1)?.adopted, 1);
    assert.ok(lines.some((l) => l.message === 'config reloaded' && typeof l.timestamp === 'string'));
    assert.ok(lines.some((l) => l.audit === true && l.key_id === keys.luks), 'an audit line per key access');
    // Nothing in the sandbox made the daemon complain (a short memlock limit, a refused call, a cookie timeout would).
    assert.deepEqual(lines.filter((l) => l.level === 'warn' || l.level === 'error'), []);
  });

  it('detaches the volume', async () => {
    assert.equal((await g.agentJson<{ closed: boolean }>(['detach', 'vol-luks'])).closed, true);
    assert.equal(await crypt(), 'No devices found');
  });
});
