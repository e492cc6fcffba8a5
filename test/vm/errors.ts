/**
 * Errors of the test harness. Not part of src/'s registries (the harness is test
 * infrastructure, not product), but shaped the same way: a `name`, a stable
 * `code`, a message that says what was attempted, and `cause`.
 */
export const vmErrors = {
  E_RUN_SPAWN: 'The command could not be started (not found, not executable).',
  E_RUN_OUTPUT_LIMIT: 'The command wrote more than maxOutputBytes to stdout and stderr together and was killed.',
  E_RUN_ARGUMENT: 'A run was asked with an invalid argv or option.',
  E_VM_MISSING: 'A package or file the VM needs is missing and could not be installed.',
  E_VM_BOOT: 'The VM did not come up: qemu failed, the guest init failed, or the boot timed out.',
  E_VM_CHANNEL: 'The command channel broke: the VM died, the peer closed, or a frame was malformed.',
  E_VM_STOPPED: 'The VM (or channel) was already stopped when a command was sent.',
  E_OP_FAILED: 'A device operation failed on the peer; details.errno names the operating-system error.',
  E_VM_TIMEOUT: 'A whole console run did not finish within its timeout; the VM was killed.',
} as const;

export type VmErrorCode = keyof typeof vmErrors;

export class VmError extends Error {
  override readonly name = 'VmError';
  readonly code: VmErrorCode;
  readonly details: Record<string, unknown>;

  constructor(code: VmErrorCode, message: string, options: { details?: Record<string, unknown>; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.details = options.details ?? {};
  }
}

export function isVmErrorCode(value: string): value is VmErrorCode {
  return Object.hasOwn(vmErrors, value);
}
