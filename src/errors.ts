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

/** An error class whose codes are exactly one layer's registry. */
export interface ErrorClass<Code extends string> {
  new (code: Code, message: string, options?: ErrorOptions): PortcullisError & { readonly code: Code };
}

/**
 * The one way a layer gets its error type: a class whose `code` is typed as
 * the layer's registry (so a layer cannot throw a code it does not own) and
 * a factory for it. Every layer's errors.ts is one call of this.
 */
export function errorFamily<R extends ErrorRegistry>(name: string, _registry: R): ErrorClass<keyof R & string> {
  type Code = keyof R & string;
  return class extends PortcullisError {
    override readonly name: string = name;
    declare readonly code: Code;

    constructor(code: Code, message: string, options?: ErrorOptions) {
      super(code, message, options);
    }
  };
}

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
