/**
 * The LUKS driver against a real kernel's dm-crypt: in the project's qemu VM
 * (test/vm) on machines without device-mapper, directly on a host that has
 * it (as root). Loop devices over files in a scratch directory of the guest
 * stand in for volumes.
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

for (const type of ['luks', 'luks2'] as const) {
  describe(`${type}: every operation on a real device`, () => {
    const key = randomBytes(64);
    let dev: string;
    let uuid: string;

    it('format() writes a header that isLuks(), uuid() and dump() read back', async () => {
      dev = await loopDevice(24);
      assert.equal(await driver.isLuks(dev), false);
      uuid = await driver.format(dev, key, { type, cipher: 'aes-xts-plain64', keySize: 512, ...(type === 'luks2' ? { label: 'portcullis-test' } : {}) });
      assert.match(uuid, /^[0-9a-f-]{36}$/);
      assert.equal(await driver.isLuks(dev), true);
      assert.equal(await driver.uuid(dev), uuid);
      const dump = await driver.dump(dev);
      if (type === 'luks2') {
        assert.equal(dump.version, 2);
        const keyslots = (dump as unknown as { metadata: { keyslots: Record<string, { kdf: { type: string; iterations: number } }> } }).metadata.keyslots;
        assert.deepEqual(Object.values(keyslots).map((k) => [k.kdf.type, k.kdf.iterations]), [['pbkdf2', 1000]], 'the fast PBKDF by default');
      } else {
        assert.equal(dump.version, 1);
        assert.deepEqual((dump as { keyslots: Array<{ type: string; iterations: number }> }).keyslots.map((k) => [k.type, k.iterations]), [['pbkdf2', 1000]], 'the fast PBKDF by default');
      }
    });

    it('open() maps it, status() and list() report it, a second open() is idempotent', async () => {
      const opened = await driver.open(dev, `t-${type}`, key, { type });
      const { status: answered, ...rest } = opened;
      assert.deepEqual(rest, { name: `t-${type}`, mapperPath: `/dev/mapper/t-${type}`, opened: true, legacyPassphrase: false, removedHalfCreated: false, uuid });
      await sh(`test -b /dev/mapper/t-${type}`);
      const status = await driver.status(`t-${type}`);
      assert.deepEqual(answered, status, 'open() answers the status the kernel reports');
      assert.equal(status?.device, dev);
      assert.equal(status?.type, type === 'luks' ? 'LUKS1' : 'LUKS2', 'the type from the dm UUID, through sysfs');
      const described = await driver.describe(`t-${type}`);
      assert.equal(described?.cipher, 'aes-xts-plain64', 'what sysfs does not say, cryptsetup status does');
      assert.equal(described?.keySizeBits, 512);
      assert.equal(described?.sizeSectors, status?.sizeSectors, 'sysfs and cryptsetup agree on the size');
      assert.ok((await driver.list()).some((m) => m.name === `t-${type}`));
      assert.equal((await driver.open(dev, `t-${type}`, key, { type })).opened, false);
    });

    it('data written through the mapping survives close and reopen', async () => {
      // A text marker plus random bytes: the marker must be findable in cleartext and absent from the raw device.
      await sh(`(printf PORTCULLIS-CLEARTEXT-MARKER; head -c 1048549 /dev/urandom) > ${scratch}/pattern-${type} && dd if=${scratch}/pattern-${type} of=/dev/mapper/t-${type} bs=1M count=1 conv=fsync status=none`);
      const written = await sh(`sha256sum < ${scratch}/pattern-${type} | cut -d' ' -f1`);
      assert.deepEqual(await driver.close(`t-${type}`), { closed: true, pending: false });
      assert.equal(await driver.status(`t-${type}`), undefined);
      await driver.open(dev, `t-${type}`, key, { type });
      assert.equal(await sh(`head -c 1048576 /dev/mapper/t-${type} | sha256sum | cut -d' ' -f1`), written);
      assert.equal(await sh(`grep -a -c PORTCULLIS-CLEARTEXT-MARKER /dev/mapper/t-${type} || true`), '1');
      assert.equal(await sh(`grep -a -c PORTCULLIS-CLEARTEXT-MARKER ${dev} || true`), '0', 'the raw device holds ciphertext only');
    });

    it('resize() grows the mapping after the backing file grows', async () => {
      const before = (await driver.status(`t-${type}`))?.sizeSectors ?? 0;
      const file = await sh(`losetup --noheadings -O BACK-FILE ${dev}`);
      await sh(`truncate -s 40M ${file} && losetup --set-capacity ${dev}`);
      await driver.resize(`t-${type}`, key);
      const afterSize = (await driver.status(`t-${type}`))?.sizeSectors ?? 0;
      assert.equal(afterSize - before, (16 * 1024 * 1024) / 512);
    });

    it('a wrong key opens nothing and changes nothing', async () => {
      await driver.close(`t-${type}`);
      const header = await sha(dev);
      const err = await rejectsWithCode(driver.open(dev, `t-${type}`, randomBytes(64), { type }), 'E_WRONG_KEY');
      assert.ok(!JSON.stringify({ message: err.message, details: (err as { details?: unknown }).details }).includes(key.toString('hex')), 'errors never carry the key');
      assert.equal(await driver.status(`t-${type}`), undefined);
      assert.equal(await sha(dev), header);
    });

    it('close() twice: the second finds nothing to close and succeeds', async () => {
      await driver.open(dev, `t-${type}`, key, { type });
      assert.deepEqual(await driver.close(`t-${type}`), { closed: true, pending: false });
      assert.deepEqual(await driver.close(`t-${type}`), { closed: false, pending: false });
    });

    it('eraseKeyslots() makes the volume unopenable with its key for good', async () => {
      const pinned = await driver.identify(dev);
      await driver.eraseKeyslots(pinned, { uuid: await driver.uuid(pinned) });
      await rejectsWithCode(driver.open(dev, `t-${type}`, key, { type }), 'E_WRONG_KEY', 'E_CRYPTSETUP_PARAMS');
      assert.equal(await driver.status(`t-${type}`), undefined);
    });
  });
}

describe('plain: os-brick\'s CryptsetupEncryptor mapping', () => {
  it('opens, carries data across close and reopen, and closes', async () => {
    const dev = await loopDevice(8);
    const key = randomBytes(32);
    await driver.open(dev, 't-plain', key, { type: 'plain', cipher: 'aes-xts-plain64', keySize: 256 });
    assert.equal((await driver.status('t-plain'))?.type, 'PLAIN');
    await sh('printf portcullis-plain-marker | dd of=/dev/mapper/t-plain conv=fsync status=none');
    await driver.close('t-plain');
    await driver.open(dev, 't-plain', key, { type: 'plain', cipher: 'aes-xts-plain64', keySize: 256 });
    assert.equal(await sh('head -c 23 /dev/mapper/t-plain'), 'portcullis-plain-marker');
    await driver.close('t-plain');
  });
});

describe('os-brick interop', () => {
  it('a volume formatted with os-brick\'s command line opens through the driver', async () => {
    const dev = await loopDevice(8);
    const key = randomBytes(32);
    // os-brick: cryptsetup --batch-mode luksFormat --type luks1 --key-file=- DEV, hex passphrase on stdin.
    await runner.run(['cryptsetup', '--batch-mode', 'luksFormat', '--type', 'luks1', '--key-file=-', '--pbkdf-force-iterations', '1000', dev], {
      stdin: Buffer.from(key.toString('hex')),
    });
    assert.equal((await driver.open(dev, 'from-osbrick', key, { type: 'luks' })).opened, true);
    await driver.close('from-osbrick');
  });

  it('a driver-formatted volume opens with os-brick\'s luksOpen line', async () => {
    const dev = await loopDevice(8);
    const key = randomBytes(32);
    await driver.format(dev, key, { type: 'luks' });
    const open = await runner.run(['cryptsetup', 'luksOpen', '--key-file=-', dev, 'to-osbrick'], { stdin: Buffer.from(key.toString('hex')) });
    assert.equal(open.code, 0, open.stderr.toString());
    await driver.close('to-osbrick');
  });

  it('a volume with os-brick\'s old mangled passphrase still opens, flagged as legacy', async () => {
    const dev = await loopDevice(8);
    const key = Buffer.concat([Buffer.from([0x01, 0x02]), randomBytes(30)]); // bytes < 0x10 make the mangled form differ
    const mangled = [...key].map((b) => b.toString(16)).join('');
    await runner.run(['cryptsetup', '--batch-mode', 'luksFormat', '--type', 'luks1', '--key-file=-', '--pbkdf-force-iterations', '1000', dev], { stdin: Buffer.from(mangled) });
    assert.equal((await driver.open(dev, 'legacy', key, { type: 'luks' })).legacyPassphrase, true);
    await driver.close('legacy');
  });
});
