/**
 * Crash injection for the reliability suite, test-only: with
 * PORTCULLIS_TEST_KILL_AT=<step> in its environment the daemon SIGKILLs
 * itself on reaching that step, the way a power cut or an OOM kill would
 * stop it. The suite restarts it and checks that the state converges. Read
 * once at start; unset (always, in production) it costs one comparison.
 */
export const KILL_STEPS = [
  'attach:key-fetched',
  'attach:recorded',
  'attach:formatted',
  'attach:opened',
  'detach:closed',
  'erase:closed',
  'erase:erased',
  'erase:key-deleted',
  'rekey:slot-added',
  'rekey:recorded',
  'rekey:slot-removed',
] as const;

export type KillStep = (typeof KILL_STEPS)[number];

export const KILL_ENV = 'PORTCULLIS_TEST_KILL_AT';
const armed = process.env[KILL_ENV];

export function killPoint(step: KillStep): void {
  if (armed === step) process.kill(process.pid, 'SIGKILL');
}

/** For the start-up log: a daemon armed to crash must say so loudly. */
export const armedKillStep = (): string | undefined => armed;
