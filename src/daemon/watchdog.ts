import type { Logger } from './log.js';

/**
 * The systemd watchdog, as sd_watchdog_enabled(3) and sd_notify(3) define it.
 * When the unit sets WatchdogSec=, systemd passes $WATCHDOG_USEC (and
 * $WATCHDOG_PID) and expects "WATCHDOG=1" more often than that; a service
 * that falls silent is killed and, with Restart=on-failure, restarted.
 *
 * The keep-alive is a timer on the event loop, so it proves exactly what a
 * hung daemon loses: a loop that stops turning (a runaway synchronous call,
 * a deadlock in the addon, SIGSTOP) stops the pings. It sends at half the
 * interval, as sd_watchdog_enabled(3) advises, so one late tick is not a
 * restart.
 *
 * systemd arms the watchdog of a Type=notify service when READY=1 arrives
 * (service_enter_start_post() resets it), so the daemon starts pinging right
 * after READY=1; start-up itself is bounded by TimeoutStartSec=.
 */

/** setInterval and clearInterval, replaceable so tests can drive the clock. */
export interface WatchdogTimers {
  setInterval(fn: () => void, ms: number): { unref(): unknown };
  clearInterval(handle: { unref(): unknown }): void;
}

/** What $WATCHDOG_USEC and $WATCHDOG_PID ask of this process. */
export type WatchdogPlan =
  | { enabled: true; usec: number; intervalMs: number }
  | { enabled: false; reason: 'unset' | 'other-pid' | 'invalid'; detail: string };

/** Node's timers overflow above 2^31-1 ms (and then fire after 1 ms); no sane WatchdogSec= gets near. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * Decides as sd_watchdog_enabled() does: on when $WATCHDOG_USEC is a positive
 * integer and $WATCHDOG_PID is unset or names this process.
 */
export function watchdogPlan(env: NodeJS.ProcessEnv, pid: number): WatchdogPlan {
  const usecText = env['WATCHDOG_USEC'];
  if (usecText === undefined || usecText === '') return { enabled: false, reason: 'unset', detail: 'WATCHDOG_USEC is not set' };
  const pidText = env['WATCHDOG_PID'];
  if (pidText !== undefined && pidText !== '' && pidText !== String(pid)) {
    // Inherited from a parent that systemd watches (e.g. a wrapper that did not exec): not ours to feed.
    return { enabled: false, reason: 'other-pid', detail: `WATCHDOG_PID=${pidText} is not this process (pid ${pid})` };
  }
  if (!/^[1-9]\d*$/.test(usecText) || !Number.isSafeInteger(Number(usecText))) {
    return { enabled: false, reason: 'invalid', detail: `WATCHDOG_USEC="${usecText}" is not a positive integer of microseconds` };
  }
  const usec = Number(usecText);
  return { enabled: true, usec, intervalMs: Math.min(MAX_TIMER_MS, Math.max(1, Math.floor(usec / 2000))) };
}

export interface WatchdogOptions {
  /** Sends one sd_notify datagram; may throw when systemd's socket is gone. */
  notify: (state: string) => void;
  log: Logger;
  /** @default process.env */
  env?: NodeJS.ProcessEnv;
  /** @default process.pid */
  pid?: number;
  /** @default the global setInterval/clearInterval */
  timers?: WatchdogTimers;
}

export interface Watchdog {
  /** The ping interval chosen, or undefined when systemd asked for no watchdog. */
  readonly intervalMs: number | undefined;
  /** Stops the pings. Safe to call twice. */
  stop(): void;
}

const realTimers: WatchdogTimers = {
  setInterval: (fn, ms) => setInterval(fn, ms),
  clearInterval: (handle) => clearInterval(handle as NodeJS.Timeout),
};

/**
 * Starts sending WATCHDOG=1 every half of $WATCHDOG_USEC, when systemd asked
 * for it. The timer is unref'd: it never keeps a daemon alive that has
 * nothing else left to do. A failed send is logged once (then again only
 * after sends have worked in between) and otherwise ignored: systemd will
 * notice the silence itself, and stopping the daemon over it would be worse.
 */
export function startWatchdog(options: WatchdogOptions): Watchdog {
  const { notify, log } = options;
  const plan = watchdogPlan(options.env ?? process.env, options.pid ?? process.pid);
  if (!plan.enabled) {
    if (plan.reason === 'invalid') log.warn(`${plan.detail}, ignoring`, {});
    else if (plan.reason === 'other-pid') log.debug(`${plan.detail}; not sending WATCHDOG=1`, {});
    return { intervalMs: undefined, stop: () => undefined };
  }
  const timers = options.timers ?? realTimers;
  let failing = false;
  const handle = timers.setInterval(() => {
    try {
      notify('WATCHDOG=1');
      failing = false;
    } catch (err) {
      if (!failing) log.warn('cannot send WATCHDOG=1 to systemd, ignoring', { error: err instanceof Error ? err.message : String(err) });
      failing = true;
    }
  }, plan.intervalMs);
  handle.unref();
  log.info('systemd watchdog on: sending WATCHDOG=1 at half of WATCHDOG_USEC', { watchdog_usec: plan.usec, interval_ms: plan.intervalMs });
  let stopped = false;
  return {
    intervalMs: plan.intervalMs,
    stop() {
      if (stopped) return;
      stopped = true;
      timers.clearInterval(handle);
    },
  };
}
