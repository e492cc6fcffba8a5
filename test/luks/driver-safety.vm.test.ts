/**
 * The LUKS driver against a real kernel, where it must refuse or hide: safe
 * format never touches what is not blank, no key bytes reach any process's
 * argv or environment, and concurrent opens end with exactly the right
 * mappings. (The operations themselves are in driver.vm.test.ts.)
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import type { LuksDriver } from '../../src/luks/driver.js';
import { rejectsWithCode } from '../helpers/errors.js';
import type { PrivilegedRunner } from '../vm/index.js';
import { luksKernelForFile, type LuksKernel } from './luks-kernel.js';

let runner: PrivilegedRunner;
let driver: LuksDriver;
let sh: LuksKernel['sh'];
let loopDevice: LuksKernel['loopDevice'];
let sha: LuksKernel['sha'];
let scratch: string;
luksKernelForFile((kernel) => ({ runner, driver, sh, loopDevice, sha, scratch } = kernel));

describe('safe format: what is not blank is never touched', () => {
  it('refuses a device holding ext4, naming the signature; content unchanged', async () => {
    const dev = await loopDevice(8);
    await sh(`mkfs.ext4 -q -F ${dev}`);
    const before = await sha(dev);
    const err = await rejectsWithCode(driver.format(dev, randomBytes(32), { type: 'luks2' }), 'E_DEVICE_NOT_BLANK');
    assert.match(err.message, /ext4 signature at 0x438/);
    assert.equal(await sha(dev), before);
  });

  it('refuses a device holding random bytes; content unchanged', async () => {
    const dev = await loopDevice(8);
    await sh(`head -c 2097152 /dev/urandom | dd of=${dev} conv=fsync status=none`);
    const before = await sha(dev);
    await rejectsWithCode(driver.format(dev, randomBytes(32), { type: 'luks' }), 'E_DEVICE_NOT_BLANK');
    assert.equal(await sha(dev), before);
  });

  it('refuses a device whose reads fail', async () => {
    // A device-mapper "error" target: every read fails, as a dying disk's would.
    // No udev in the VM: mknodes makes the /dev/mapper node synchronously.
    await sh('dmsetup create t-failing --table "0 16384 error" && dmsetup mknodes t-failing');
    try {
      await rejectsWithCode(driver.format('/dev/mapper/t-failing', randomBytes(32), { type: 'luks' }), 'E_DEVICE_UNREADABLE', 'E_DEVICE_NOT_BLANK');
      assert.equal((await runner.run(['cryptsetup', 'isLuks', '/dev/mapper/t-failing'])).code !== 0, true);
    } finally {
      await sh('dmsetup remove t-failing');
    }
  });
});

describe('secrets', () => {
  it('no key bytes, raw or hex, appear in any process\'s argv or environment while the helper (or cryptsetup) holds the key', async () => {
    const dev = await loopDevice(8);
    // No newline or NUL in the key, so its raw bytes make one grep -F pattern.
    let key = randomBytes(32);
    while (key.includes(0x0a) || key.includes(0x00)) key = randomBytes(32);
    // A deliberately slow PBKDF: the open then spends seconds with the key in hand, every process scanned again and again meanwhile.
    await driver.format(dev, key, { type: 'luks', pbkdf: { type: 'pbkdf2', iterations: 60_000 } });
    await sh(`cat > ${scratch}/needle-hex`, Buffer.from(key.toString('hex')));
    await sh(`cat > ${scratch}/needle-raw`, key);
    // The watcher reads what to look for from files, so its own argv holds no key. Builtins only in the hot loop.
    const watcher = runner.run(
      [
        'sh',
        '-c',
        `n=0; seen=0; found=0
         while [ $n -lt 100000 ] && [ ! -e ${scratch}/stop ]; do
           for p in /proc/[0-9]*; do
             read -r c < $p/comm 2>/dev/null || continue
             case "$c" in cryptsetup|portcullis-help) seen=1;; esac
             for f in $p/cmdline $p/environ; do
               if grep -q -a -F -f ${scratch}/needle-hex $f 2>/dev/null || grep -q -a -F -f ${scratch}/needle-raw $f 2>/dev/null; then found=$((found+1)); fi
             done
           done; n=$((n+1))
         done
         echo "$seen $found"`,
      ],
      { timeoutMs: 600_000 },
    );
    try {
      await driver.open(dev, 't-secret', key, { type: 'luks' });
    } finally {
      await sh(`touch ${scratch}/stop`);
    }
    const [seen, found] = (await watcher).stdout.toString().trim().split(' ').map(Number);
    assert.equal(seen, 1, 'the watcher saw the helper (or cryptsetup) while the open ran, so the check had something to look at');
    assert.equal(found, 0, 'no process had the key in its argv or environment');
    await driver.close('t-secret');
  });
});

describe('concurrency', () => {
  it('16 parallel opens of 16 devices end with exactly 16 right mappings', async () => {
    const devices: string[] = [];
    // One at a time: `losetup --find` is racy when run in parallel.
    for (let i = 0; i < 16; i += 1) devices.push(await loopDevice(4));
    const keys = devices.map(() => randomBytes(32));
    // Set-up only: os-brick's bare luksFormat line (the driver's format path is tested above).
    await Promise.all(devices.map((dev, i) => runner.run(['cryptsetup', '--batch-mode', 'luksFormat', '--type', 'luks1', '--key-file=-', '--pbkdf-force-iterations', '1000', dev], { stdin: Buffer.from((keys[i] as Buffer).toString('hex')) })));
    await Promise.all(devices.map((dev, i) => driver.open(dev, `par-${i}`, keys[i] as Buffer, { type: 'luks' })));
    const mapped = (await driver.list()).filter((m) => m.name.startsWith('par-'));
    assert.deepEqual(mapped.map((m) => [m.name, m.device]).sort(), devices.map((d, i) => [`par-${i}`, d]).sort());
    await Promise.all(devices.map((_, i) => driver.close(`par-${i}`)));
  });

  it('8 racing opens of one device make one mapping; all eight answer it', async () => {
    const dev = await loopDevice(4);
    const key = randomBytes(32);
    await driver.format(dev, key, { type: 'luks' });
    const results = await Promise.all(Array.from({ length: 8 }, () => driver.open(dev, 'race', key, { type: 'luks' })));
    assert.equal(results.filter((r) => r.opened).length, 1);
    assert.ok(results.every((r) => r.mapperPath === '/dev/mapper/race'));
    assert.equal((await driver.list()).filter((m) => m.name === 'race').length, 1);
    await driver.close('race');
  });
});
