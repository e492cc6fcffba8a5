/**
 * The one error type every layer throws. Each layer keeps its own registry of
 * codes (see `*\/errors.ts`); docs/errors.md documents every code, and a test
 * keeps the two in step.
 */
export interface ErrorOptions {
  details?: Record<string, unknown>;
  cause?: unknown;
}

export class PortcullisError extends Error {
  override readonly name: string = 'PortcullisError';
  readonly code: string;
  readonly details: Record<string, unknown>;

  constructor(code: string, message: string, options: ErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.details = options.details ?? {};
  }

  toJSON(): { code: string; message: string; details: Record<string, unknown> } {
    return { code: this.code, message: this.message, details: this.details };
  }
}

/** A registry maps each stable code to a one-line description for docs/errors.md. */
export type ErrorRegistry = Readonly<Record<string, string>>;

/** Codes not owned by one layer. */
export const commonErrors = {
  E_INTERNAL: 'A bug: an unexpected failure that portcullis did not classify. Please report it with the log line.',
} as const satisfies ErrorRegistry;

export function isPortcullisError(err: unknown, code?: string): err is PortcullisError {
  return err instanceof PortcullisError && (code === undefined || err.code === code);
}

/** Message of an unknown thrown value, for wrapping causes without leaking objects. */
export function describeCause(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
