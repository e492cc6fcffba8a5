/**
 * Runs inside the VM (started by the guest init as the run script's last
 * command): serves a LocalRunner on the virtio-serial port, so the host runs
 * privileged commands in the guest kernel. Exits when the host hangs up,
 * which makes init power the VM off.
 *
 * Kept to node: built-ins and the small device-operations module: under TCG
 * every module loaded costs start-up time.
 */
import { createReadStream, createWriteStream, openSync, readFileSync, readdirSync } from 'node:fs';
import { release } from 'node:os';
import { localDeviceOps } from '../../src/luks/device/ops.js';
import { serveChannel } from './channel.js';
import { serveDeviceOps } from './device-ops.js';
import { serveHelper } from './helper-link.js';
import { LocalRunner } from './local-runner.js';
import { CHANNEL_PORT_NAME } from './protocol.js';

/** udev would make /dev/virtio-ports/NAME; the guest has no udev, so look the name up in sysfs. */
function findPort(name: string): string {
  const base = '/sys/class/virtio-ports';
  for (const entry of readdirSync(base)) {
    if (readFileSync(`${base}/${entry}/name`, 'utf8').trim() === name) return `/dev/${entry}`;
  }
  throw new Error(`no virtio-serial port named ${name} under ${base}`);
}

const path = findPort(CHANNEL_PORT_NAME);
// One descriptor for both directions; the streams must not close it on their own.
const fd = openSync(path, 'r+');
const input = createReadStream('', { fd, autoClose: false, highWaterMark: 256 * 1024 });
const output = createWriteStream('', { fd, autoClose: false });
const runner = new LocalRunner(`vm ${release()}`);
// Device questions are answered by the production code, in this process, from the guest's kernel.
const deviceOp = serveDeviceOps(localDeviceOps(runner));
// The privileged helper, started on first use: frames pass through untouched.
const helper = serveHelper();
const op = (name: string, args: unknown[]) => (name === 'helper' ? helper(args[0]) : deviceOp(name, args));
await serveChannel({ where: runner.where, run: (argv, options) => runner.run(argv, options), op }, input, output);
process.exit(0);
