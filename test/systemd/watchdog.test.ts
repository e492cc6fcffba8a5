/**
 * src/daemon/watchdog.ts on its own: what $WATCHDOG_USEC and $WATCHDOG_PID
 * ask for (sd_watchdog_enabled(3)), and the keep-alive timer driven by fake
 * timers, so cadence is counted in ticks rather than measured in time.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { describe, it } from 'node:test';
import type { Logger, LogFields } from '../../src/daemon/log.js';
import { startWatchdog, watchdogPlan, type WatchdogTimers } from '../../src/daemon/watchdog.js';

type Level = 'error' | 'warn' | 'info' | 'debug' | 'audit';

function memoryLog(): Logger & { lines: Array<{ level: Level; event: string; fields: LogFields }> } {
  const lines: Array<{ level: Level; event: string; fields: LogFields }> = [];
  const at = (level: Level) => (event: string, fields: LogFields = {}) => void lines.push({ level, event, fields });
  return { lines, error: at('error'), warn: at('warn'), info: at('info'), debug: at('debug'), audit: at('audit'), setLevel: () => undefined, close: async () => undefined };
}

/** One interval at a time; tick() runs it as the event loop would when it is due. */
function fakeTimers() {
  const state = { scheduled: [] as Array<{ fn: () => void; ms: number; unrefed: boolean; cleared: boolean }> };
  const timers: WatchdogTimers = {
    setInterval(fn, ms) {
      const entry = { fn, ms, unrefed: false, cleared: false };
      state.scheduled.push(entry);
      return { unref: () => (entry.unrefed = true) };
    },
    clearInterval() {
      for (const entry of state.scheduled) entry.cleared = true;
    },
  };
  const tick = (n = 1) => {
    for (let i = 0; i < n; i += 1) for (const entry of state.scheduled) if (!entry.cleared) entry.fn();
  };
  return { timers, state, tick };
}

describe('watchdogPlan()', () => {
  it('watchdogPlan() is off, quietly, when WATCHDOG_USEC is unset or empty', () => {
    assert.deepEqual(watchdogPlan({}, 42), { enabled: false, reason: 'unset', detail: 'WATCHDOG_USEC is not set' });
    assert.equal(watchdogPlan({ WATCHDOG_USEC: '' }, 42).enabled, false);
  });

  it('watchdogPlan() pings at half of WATCHDOG_USEC, in milliseconds', () => {
    assert.deepEqual(watchdogPlan({ WATCHDOG_USEC: '30000000' }, 42), { enabled: true, usec: 30_000_000, intervalMs: 15_000 });
    assert.deepEqual(watchdogPlan({ WATCHDOG_USEC: '2000000' }, 42), { enabled: true, usec: 2_000_000, intervalMs: 1000 });
    assert.deepEqual(watchdogPlan({ WATCHDOG_USEC: '3001' }, 42), { enabled: true, usec: 3001, intervalMs: 1 });
  });

  it('watchdogPlan() never picks less than 1 ms, nor more than a Node timer can hold (it would fire at once)', () => {
    assert.equal((watchdogPlan({ WATCHDOG_USEC: '1' }, 42) as { intervalMs: number }).intervalMs, 1);
    assert.equal((watchdogPlan({ WATCHDOG_USEC: String(10 * 2 ** 31 * 1000) }, 42) as { intervalMs: number }).intervalMs, 2 ** 31 - 1);
  });

  it('watchdogPlan() applies when WATCHDOG_PID is unset or is this pid, and not when it names another', () => {
    assert.equal(watchdogPlan({ WATCHDOG_USEC: '1000000', WATCHDOG_PID: '42' }, 42).enabled, true);
    assert.equal(watchdogPlan({ WATCHDOG_USEC: '1000000', WATCHDOG_PID: '' }, 42).enabled, true);
    assert.deepEqual(watchdogPlan({ WATCHDOG_USEC: '1000000', WATCHDOG_PID: '43' }, 42), {
      enabled: false,
      reason: 'other-pid',
      detail: 'WATCHDOG_PID=43 is not this process (pid 42)',
    });
  });

  it('watchdogPlan() refuses a WATCHDOG_USEC that is not a positive integer, quoting it', () => {
    for (const value of ['0', '-5', 'abc', '1.5', ' 100', '100 ', '1e6', '0x10', '99999999999999999999']) {
      const plan = watchdogPlan({ WATCHDOG_USEC: value }, 42);
      assert.equal(plan.enabled, false, value);
      assert.equal(plan.enabled === false && plan.reason, 'invalid', value);
      assert.equal(plan.enabled === false && plan.detail, `WATCHDOG_USEC="${value}" is not a positive integer of microseconds`);
    }
  });
});

describe('startWatchdog()', () => {
  it('startWatchdog() sends exactly one "WATCHDOG=1" per interval, scheduled at half of WATCHDOG_USEC', () => {
    const sent: string[] = [];
    const { timers, state, tick } = fakeTimers();
    const dog = startWatchdog({ notify: (s) => void sent.push(s), log: memoryLog(), env: { WATCHDOG_USEC: '30000000' }, pid: 7, timers });
    assert.equal(dog.intervalMs, 15_000);
    assert.deepEqual(state.scheduled.map((e) => e.ms), [15_000], 'one timer, at half the watchdog');
    assert.deepEqual(sent, [], 'nothing before the first interval has passed');
    tick();
    assert.deepEqual(sent, ['WATCHDOG=1']);
    tick(4);
    assert.deepEqual(sent, Array(5).fill('WATCHDOG=1'));
  });

  it('startWatchdog() unrefs its timer, so it never keeps a finished daemon alive', () => {
    const { timers, state } = fakeTimers();
    startWatchdog({ notify: () => undefined, log: memoryLog(), env: { WATCHDOG_USEC: '1000000' }, timers });
    assert.equal(state.scheduled[0]?.unrefed, true);
  });

  it('startWatchdog() stop() ends the pings and may be called twice', () => {
    const sent: string[] = [];
    const { timers, tick } = fakeTimers();
    const dog = startWatchdog({ notify: (s) => void sent.push(s), log: memoryLog(), env: { WATCHDOG_USEC: '1000000' }, timers });
    tick();
    dog.stop();
    dog.stop();
    tick(3);
    assert.deepEqual(sent, ['WATCHDOG=1']);
  });

  it('startWatchdog() logs the interval it chose at info, with WATCHDOG_USEC', () => {
    const log = memoryLog();
    startWatchdog({ notify: () => undefined, log, env: { WATCHDOG_USEC: '2000000' }, timers: fakeTimers().timers });
    assert.deepEqual(log.lines, [
      { level: 'info', event: 'systemd watchdog on: sending WATCHDOG=1 at half of WATCHDOG_USEC', fields: { watchdog_usec: 2_000_000, interval_ms: 1000 } },
    ]);
  });

  it('startWatchdog() starts no timer and sends nothing when systemd asked for no watchdog', () => {
    for (const env of [{}, { WATCHDOG_USEC: '1000000', WATCHDOG_PID: '1' }, { WATCHDOG_USEC: 'soon' }]) {
      const { timers, state } = fakeTimers();
      const dog = startWatchdog({ notify: () => assert.fail('no notify expected'), log: memoryLog(), env, pid: 99, timers });
      assert.equal(dog.intervalMs, undefined);
      assert.equal(state.scheduled.length, 0, JSON.stringify(env));
      dog.stop();
    }
  });

  it('startWatchdog() warns about a bad WATCHDOG_USEC ending ", ignoring", and keeps another pid\'s watchdog to debug', () => {
    const bad = memoryLog();
    startWatchdog({ notify: () => undefined, log: bad, env: { WATCHDOG_USEC: 'soon' }, timers: fakeTimers().timers });
    assert.deepEqual(bad.lines.map((l) => [l.level, l.event]), [['warn', 'WATCHDOG_USEC="soon" is not a positive integer of microseconds, ignoring']]);
    const other = memoryLog();
    startWatchdog({ notify: () => undefined, log: other, env: { WATCHDOG_USEC: '1000000', WATCHDOG_PID: '1' }, pid: 99, timers: fakeTimers().timers });
    assert.deepEqual(other.lines.map((l) => l.level), ['debug']);
  });

  it('startWatchdog() survives a failing notify, logging once per run of failures', () => {
    const log = memoryLog();
    let fail = true;
    const sent: string[] = [];
    const { timers, tick } = fakeTimers();
    const notify = (state: string) => {
      if (fail) throw new Error('sendto: ECONNREFUSED');
      sent.push(state);
    };
    startWatchdog({ notify, log, env: { WATCHDOG_USEC: '1000000' }, timers });
    tick(3);
    fail = false;
    tick();
    fail = true;
    tick(2);
    const warnings = log.lines.filter((l) => l.level === 'warn');
    assert.deepEqual(warnings.map((l) => [l.event, l.fields['error']]), [
      ['cannot send WATCHDOG=1 to systemd, ignoring', 'sendto: ECONNREFUSED'],
      ['cannot send WATCHDOG=1 to systemd, ignoring', 'sendto: ECONNREFUSED'],
    ]);
    assert.deepEqual(sent, ['WATCHDOG=1']);
  });

  it('startWatchdog() with real timers lets a process with nothing else to do exit', async () => {
    // An hour-long interval: if the timer held the loop, this child would not exit within the bound below.
    const module = new URL('../../src/daemon/watchdog.js', import.meta.url).href;
    const script = `
      import { startWatchdog } from ${JSON.stringify(module)};
      const log = { error() {}, warn() {}, info() {}, debug() {}, audit() {}, setLevel() {}, async close() {} };
      const dog = startWatchdog({ notify() {}, log, env: { WATCHDOG_USEC: '7200000000' } });
      process.stdout.write(String(dog.intervalMs));`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.on('exit', (c, s) => resolve([c, s])));
    clearTimeout(timer);
    assert.equal(out, '3600000', 'the watchdog was on');
    assert.deepEqual([code, signal], [0, null], 'exited by itself');
  });
});
