import { errorFamily, type ErrorOptions, type ErrorRegistry } from '../src/errors.js';

/**
 * Codes the native addon (native/src) and its loader throw. Arguments of the
 * wrong type or range are TypeErrors and RangeErrors (codes
 * ERR_INVALID_ARG_TYPE, ERR_OUT_OF_RANGE, as Node's own), thrown before any
 * system call: they are bugs in the caller, not conditions of the host.
 */
export const nativeErrors = {
  E_NATIVE_MISSING: 'The native addon is not built (native/build/Release/portcullis_native.node is missing).',
  E_NATIVE_MLOCK: 'Secure memory could not be locked: RLIMIT_MEMLOCK is too small for the keys held, and CAP_IPC_LOCK is absent.',
  E_NATIVE_CALL_FAILED: 'A system call of the native addon failed; details.syscall and details.errno name it.',
  E_NATIVE_NOTIFY_SOCKET: '$NOTIFY_SOCKET is neither an absolute path nor an abstract "@" name, or is too long.',
  E_NATIVE_NO_FD: 'A socket has no file descriptor to read peer credentials from (closed, or not an OS socket).',
} as const satisfies ErrorRegistry;

export type NativeErrorCode = keyof typeof nativeErrors;

export const NativeError = errorFamily('NativeError', nativeErrors);
export type NativeError = InstanceType<typeof NativeError>;

export function nativeError(code: NativeErrorCode, message: string, options?: ErrorOptions): NativeError {
  return new NativeError(code, message, options);
}

export function isNativeErrorCode(code: unknown): code is NativeErrorCode {
  return typeof code === 'string' && Object.hasOwn(nativeErrors, code);
}

/**
 * The addon throws plain Errors carrying a code and properties (syscall,
 * errno, limit, ...); callers get a NativeError with those properties as
 * details and the original as cause. Anything else (TypeError, RangeError)
 * passes through unchanged.
 */
export function fromAddonError(err: unknown): unknown {
  if (!(err instanceof Error) || err instanceof NativeError) return err;
  const code: unknown = Reflect.get(err, 'code');
  if (!isNativeErrorCode(code)) return err;
  const details: Record<string, unknown> = {};
  for (const key of Object.keys(err)) if (key !== 'code') details[key] = Reflect.get(err, key);
  return nativeError(code, err.message, { details, cause: err });
}
