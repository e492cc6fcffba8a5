import { mock } from 'node:test';

export interface ArmedTimeouts {
  /** The delay (ms) of every global setTimeout() armed since the recording began, in order. */
  delays(): number[];
  restore(): void;
}

/**
 * Records the delays the code under test hands to the global setTimeout(),
 * still arming each real timer: which wait the code chose, never how long
 * anything took (speed is for bench/, not tests).
 */
export function recordTimeouts(): ArmedTimeouts {
  const spy = mock.method(globalThis, 'setTimeout');
  return {
    delays: () => spy.mock.calls.map((call) => Number(call.arguments[1] ?? 0)),
    restore: () => spy.mock.restore(),
  };
}
