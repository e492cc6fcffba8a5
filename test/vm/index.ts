/** The VM harness' API for tests: see docs/testing-vm.md. */
export type { CommandRunner, RunOptions, RunResult } from './runner.js';
export { LocalRunner } from './local-runner.js';
export { startVm, type Vm, type VmOptions } from './vm.js';
export { startSystemdVm, MASKED_UNITS, type SystemdVmOptions } from './systemd-vm.js';
export { runInVmConsole, type ConsoleRunOptions, type ConsoleRunResult } from './console-run.js';
export { privilegedRunner, directModeAvailable, type PrivilegedRunner, type PrivilegedMode } from './privileged.js';
export { serveRunner, connectRunner, type Broker } from './broker.js';
export { readFileVia, writeFileVia } from './files.js';
export { VmError, vmErrors, type VmErrorCode } from './errors.js';
