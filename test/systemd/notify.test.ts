/**
 * portcullisd's side of sd_notify(3), against a NOTIFY_SOCKET this test
 * owns, as systemd would set it for Type=notify with WatchdogSec=2s:
 * READY=1 with STATUS=, WATCHDOG=1 over and over, RELOADING=1 then READY=1
 * on SIGHUP, STOPPING=1 on SIGTERM — and silence while the daemon is frozen.
 *
 * Nothing here asserts how fast something happens. The interval is proven
 * from what the daemon says it chose (and by fake timers in
 * watchdog.test.ts); repetition by counting pings; a frozen daemon by the
 * absence of pings across a wait on the test's clock, which no slowness can
 * fake.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { request } from '../fixtures/daemon.js';
import { daemonIsReady, daemonMain, processState, spawnDaemon, startNotifyReceiver, tempDir, writeConfig, type NotifyReceiver, type RunningDaemon } from './helpers.js';

const WATCHDOG_USEC = 2_000_000;
const isWatchdog = (state: string) => state === 'WATCHDOG=1';

describe('portcullisd under Type=notify with WatchdogSec=2s', () => {
  let dir: string;
  let receiver: NotifyReceiver;
  let daemon: RunningDaemon;
  let socketPath: string;

  before(async () => {
    dir = tempDir('notify');
    socketPath = join(dir, 'portcullis.sock');
    receiver = await startNotifyReceiver(join(dir, 'notify.sock'));
    daemon = spawnDaemon([process.execPath, daemonMain, '--config', writeConfig(dir)], {
      NOTIFY_SOCKET: receiver.path,
      WATCHDOG_USEC: String(WATCHDOG_USEC),
    });
    await daemon.waitForLog(daemonIsReady);
  });
  after(async () => {
    await daemon?.stop('SIGKILL');
    await receiver?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('sends READY=1 first, with a STATUS= line naming the socket and the backend, once the socket answers', async () => {
    const { index, datagram } = await receiver.waitFor((d) => d.state.startsWith('READY=1'));
    assert.equal(index, 0, `READY=1 is the first message; got ${JSON.stringify(receiver.received.slice(0, index))} before it`);
    assert.match(datagram.state, new RegExp(`^READY=1\nSTATUS=serving on ${socketPath}, backend local, \\d+ mapping\\(s\\) adopted$`));
    const health = await request(socketPath, 'GET', '/v1/health');
    assert.ok([200, 503].includes(health.status), `health answered ${health.status}`);
  });

  it('logs the watchdog interval it chose: half of WATCHDOG_USEC', async () => {
    await daemon.waitForLog((log) => log.includes('systemd watchdog on'));
    const line = daemon.entries().find((e) => String(e['message']).startsWith('systemd watchdog on'));
    assert.ok(line, `no watchdog line in:\n${daemon.log()}`);
    assert.equal(line['watchdog_usec'], WATCHDOG_USEC);
    assert.equal(line['interval_ms'], WATCHDOG_USEC / 2000);
  });

  it('sends WATCHDOG=1, exactly that, again and again, and only after READY=1', async () => {
    const ready = await receiver.waitFor((d) => d.state.startsWith('READY=1'));
    const first = await receiver.waitFor((d) => isWatchdog(d.state));
    assert.ok(first.index > ready.index, 'no WATCHDOG=1 before READY=1');
    const second = await receiver.waitFor((d) => isWatchdog(d.state), first.index + 1);
    await receiver.waitFor((d) => isWatchdog(d.state), second.index + 1);
    const pings = receiver.received.filter((d) => d.state.includes('WATCHDOG'));
    assert.ok(pings.length >= 3);
    assert.ok(pings.every((d) => d.state === 'WATCHDOG=1'), JSON.stringify(pings));
  });

  it('on SIGHUP sends RELOADING=1 and then READY=1 again', async () => {
    const from = receiver.received.length;
    daemon.child.kill('SIGHUP');
    const reloading = await receiver.waitFor((d) => d.state === 'RELOADING=1', from);
    await receiver.waitFor((d) => d.state === 'READY=1', reloading.index + 1);
    await daemon.waitForLog((log) => log.includes('"message":"config reloaded"'));
  });

  it('sends no WATCHDOG=1 while frozen by SIGSTOP, for longer than WATCHDOG_USEC on the test clock, and resumes on SIGCONT', async () => {
    daemon.child.kill('SIGSTOP');
    for (let i = 0; processState(daemon.pid) !== 'T'; i += 1) {
      assert.ok(i < 300, 'the daemon did not stop');
      await sleep(10);
    }
    await receiver.flush(); // whatever it sent before it stopped is in now
    const frozenAt = receiver.received.length;
    const lastPing = receiver.received.filter((d) => isWatchdog(d.state)).at(-1);
    assert.ok(lastPing, 'pings were seen before the stop');
    await sleep((2 * WATCHDOG_USEC) / 1000);
    await receiver.flush();
    const whileFrozen = receiver.received.slice(frozenAt).filter((d) => isWatchdog(d.state));
    assert.deepEqual(whileFrozen, [], 'a stopped process cannot ping');

    daemon.child.kill('SIGCONT');
    const resumed = await receiver.waitFor((d) => isWatchdog(d.state), frozenAt);
    // What systemd sees: the silence between the last ping and the next exceeded WatchdogSec.
    assert.ok(resumed.datagram.at - lastPing.at > WATCHDOG_USEC / 1e6, `gap ${resumed.datagram.at - lastPing.at} s`);
    await receiver.waitFor((d) => isWatchdog(d.state), resumed.index + 1);
  });

  it('on SIGTERM sends STOPPING=1, no WATCHDOG=1 after it, and exits 0', async () => {
    const from = receiver.received.length;
    assert.equal(await daemon.stop('SIGTERM'), 0);
    await receiver.flush();
    const stopping = receiver.received.findIndex((d, i) => i >= from && d.state === 'STOPPING=1');
    assert.ok(stopping >= 0, `no STOPPING=1 in ${JSON.stringify(receiver.received.slice(from))}`);
    assert.deepEqual(receiver.received.slice(stopping + 1).filter((d) => isWatchdog(d.state)), []);
  });
});

describe('portcullisd and WATCHDOG_PID', () => {
  let dir: string;
  let receiver: NotifyReceiver;
  before(async () => {
    dir = tempDir('watchdog-pid');
    receiver = await startNotifyReceiver(join(dir, 'notify.sock'));
  });
  after(async () => {
    await receiver?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('pings when WATCHDOG_PID is its own pid (a wrapper that execs keeps the pid, as systemd sets it)', async (t) => {
    const config = writeConfig(mkdtempSync(join(dir, 'own-')));
    // sh sets WATCHDOG_PID to its own pid and execs node, which inherits it: exactly systemd's case.
    const daemon = spawnDaemon(['/bin/sh', '-c', 'export WATCHDOG_PID=$$; exec "$0" "$@"', process.execPath, daemonMain, '--config', config], {
      NOTIFY_SOCKET: receiver.path,
      WATCHDOG_USEC: '200000',
    });
    t.after(() => daemon.stop('SIGKILL'));
    await daemon.waitForLog(daemonIsReady);
    const from = receiver.received.length;
    await receiver.waitFor((d) => isWatchdog(d.state), from);
    assert.equal(await daemon.stop(), 0);
  });

  it('sends READY=1 but never WATCHDOG=1 when WATCHDOG_PID names another process, and says why in its debug log', async (t) => {
    const from = receiver.received.length;
    const daemon = spawnDaemon([process.execPath, daemonMain, '--config', writeConfig(mkdtempSync(join(dir, 'other-')))], {
      NOTIFY_SOCKET: receiver.path,
      WATCHDOG_USEC: '200000',
      WATCHDOG_PID: '1',
    });
    t.after(() => daemon.stop('SIGKILL'));
    await daemon.waitForLog(daemonIsReady);
    await receiver.waitFor((d) => d.state.startsWith('READY=1'), from);
    await daemon.waitForLog((log) => /WATCHDOG_PID=1 is not this process \(pid \d+\); not sending WATCHDOG=1/.test(log));
    await sleep(1000); // ten of the intervals it would have used
    await receiver.flush();
    assert.deepEqual(receiver.received.slice(from).filter((d) => isWatchdog(d.state)), []);
    assert.equal(await daemon.stop(), 0);
  });
});
