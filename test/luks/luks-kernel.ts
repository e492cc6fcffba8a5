/**
 * What the LUKS driver's VM tests share: a kernel with dm-crypt (the test VM,
 * or this host in direct mode), the driver over it, and loop devices over
 * files in a scratch directory beside that kernel, standing in for volumes.
 */
import assert from 'node:assert/strict';
import { after, before } from 'node:test';
import { randomBytes } from 'node:crypto';
import { createLuksDriver, type LuksDriver } from '../../src/luks/driver.js';
import { helperCryptOps } from '../../src/luks/crypt/helper.js';
import { helperClient } from '../../src/luks/helper/client.js';
import { helperDeviceOps } from '../../src/luks/helper/device-ops.js';
import { spawnHelper } from '../../src/luks/helper/spawn.js';
import { HELPER_BINARY, vmHelperTransport } from '../vm/helper-link.js';
import { privilegedRunner, type PrivilegedRunner } from '../vm/index.js';

export interface LuksKernel {
  runner: PrivilegedRunner;
  driver: LuksDriver;
  /** A directory beside that kernel for the test's own files; removed by cleanup(). */
  scratch: string;
  /** Runs a shell script beside the kernel; asserts exit 0 and returns stdout, trimmed. */
  sh(script: string, stdin?: Buffer): Promise<string>;
  /** A fresh loop device over a zeroed file of `mib` MiB. */
  loopDevice(mib?: number): Promise<string>;
  /** sha256 of the first `bytes` of a device. */
  sha(dev: string, bytes?: number): Promise<string>;
  /** Closes every mapping, detaches the loops, stops an own VM. */
  cleanup(): Promise<void>;
}

export async function luksKernel(): Promise<LuksKernel> {
  const runner = await privilegedRunner();
  const driver = driverFor(runner, process.env['PORTCULLIS_LUKS_VIA'] === 'cryptsetup' ? 'cryptsetup' : 'helper');
  const loops: string[] = [];
  const sh = async (script: string, stdin?: Buffer): Promise<string> => {
    const result = await runner.run(['sh', '-c', script], { ...(stdin === undefined ? {} : { stdin }), timeoutMs: 120_000 });
    assert.equal(result.code, 0, `sh -c '${script}' failed: ${result.stderr.toString()}`);
    return result.stdout.toString().trim();
  };
  const scratch = await sh(`mktemp -d ${runner.scratchDir}/luks.XXXXXX`);
  return {
    runner,
    driver,
    scratch,
    sh,
    async loopDevice(mib = 20) {
      const file = `${scratch}/disk-${loops.length}-${randomBytes(4).toString('hex')}.img`;
      const dev = await sh(`truncate -s ${mib}M ${file} && losetup --find --show ${file}`);
      loops.push(dev);
      return dev;
    },
    sha: (dev, bytes = 4 * 1024 * 1024) => sh(`head -c ${bytes} ${dev} | sha256sum | cut -d' ' -f1`),
    async cleanup() {
      // Leave the kernel as we found it: mappings first, then loops.
      for (const m of await driver.list().catch(() => [])) await driver.close(m.name).catch(() => undefined);
      for (const dev of loops) await runner.run(['losetup', '-d', dev]).catch(() => undefined);
      await runner.run(['rm', '-rf', scratch]).catch(() => undefined);
      await runner.stop();
    },
  };
}

/** One kernel and driver for a test file: made before its tests (handed to `use`), cleaned up after them. */
export function luksKernelForFile(use: (kernel: LuksKernel) => void): void {
  let kernel: LuksKernel | undefined;
  before(async () => {
    kernel = await luksKernel();
    use(kernel);
  });
  after(() => kernel?.cleanup());
}

/**
 * The driver as the daemon builds it: through the privileged helper beside
 * the kernel (the guest's, in the VM), or through cryptsetup's CLI
 * (luks.via: cryptsetup).
 */
export function driverFor(runner: PrivilegedRunner, via: 'helper' | 'cryptsetup'): LuksDriver {
  if (via === 'cryptsetup') return createLuksDriver({ ops: runner.ops });
  const client = helperClient({
    connect: () => (runner.mode === 'direct' ? spawnHelper({ path: HELPER_BINARY, symlinkDirs: ['/dev'], log: () => undefined }) : vmHelperTransport(runner)),
  });
  return createLuksDriver({ ops: helperDeviceOps(client, runner.ops), crypt: helperCryptOps(client) });
}
