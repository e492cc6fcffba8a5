/**
 * upgradeKeyslot() against a real kernel: volumes os-brick formatted with a
 * slow PBKDF get their keyslot rewritten to the fast one, data intact. Apart
 * from the other driver tests because the slow formats are most of its time.
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
luksKernelForFile((kernel) => ({ runner, driver, sh, loopDevice, sha } = kernel));

describe('upgradeKeyslot(): a slow os-brick keyslot rewritten to the fast PBKDF', () => {
  /** Formats with os-brick's command line and a slow PBKDF (cheaper than cryptsetup's default, still far from 1000 iterations). */
  async function osBrickVolume(type: 'luks1' | 'luks2', passphrase: Buffer): Promise<string> {
    const dev = await loopDevice(24);
    const pbkdf = type === 'luks1' ? ['--pbkdf-force-iterations', '50000'] : ['--pbkdf', 'argon2id', '--pbkdf-force-iterations', '4', '--pbkdf-memory', '65536'];
    const format = await runner.run(['cryptsetup', '--batch-mode', 'luksFormat', '--type', type, '--key-file=-', ...pbkdf, dev], { stdin: passphrase });
    assert.equal(format.code, 0, format.stderr.toString());
    return dev;
  }

  /** Writes a pattern through a mapping of `dev` and returns its checksum. */
  async function writePattern(dev: string, key: Buffer, name: string): Promise<string> {
    const { mapperPath } = await driver.open(dev, name, key, { type: 'luks' });
    await sh(`head -c 1048576 /dev/urandom | dd of=${mapperPath} conv=fsync status=none`);
    const sum = await sha(mapperPath, 1048576);
    await driver.close(name);
    return sum;
  }

  for (const type of ['luks1', 'luks2'] as const) {
    it(`${type}: the key's slot becomes pbkdf2/1000, the data and os-brick's open line still work, and a second call changes nothing`, async () => {
      const key = randomBytes(32);
      const dev = await osBrickVolume(type, Buffer.from(key.toString('hex')));
      const data = await writePattern(dev, key, `up-${type}`);
      const before = await driver.keyslots(dev);
      assert.equal(before.length, 1);
      assert.notDeepEqual([before[0]?.type, before[0]?.iterations], ['pbkdf2', 1000]);

      const result = await driver.upgradeKeyslot(dev, key);
      assert.equal(result.upgraded, true);
      assert.equal(result.to, 'pbkdf2 1000 iterations');
      assert.match(result.from ?? '', type === 'luks1' ? /^pbkdf2 \d+ iterations$/ : /^argon2id t=4 m=65536$/);
      assert.deepEqual((await driver.keyslots(dev)).map((k) => [k.type, k.iterations]), [['pbkdf2', 1000]], 'one slot, the old one retired');

      const { mapperPath } = await driver.open(dev, `up-${type}`, key, { type: 'luks' });
      assert.equal(await sha(mapperPath, 1048576), data);
      await driver.close(`up-${type}`);
      const osBrick = await runner.run(['cryptsetup', 'luksOpen', '--key-file=-', dev, `up-${type}-ob`], { stdin: Buffer.from(key.toString('hex')) });
      assert.equal(osBrick.code, 0, osBrick.stderr.toString());
      await driver.close(`up-${type}-ob`);

      assert.deepEqual(await driver.upgradeKeyslot(dev, key), { upgraded: false, from: null, to: 'pbkdf2 1000 iterations' });
    });
  }

  it('a legacy mangled passphrase is replaced by the proper hex one: the volume then opens without the fallback', async () => {
    const key = Buffer.concat([Buffer.from([0x03, 0x04]), randomBytes(30)]);
    const dev = await osBrickVolume('luks1', Buffer.from([...key].map((b) => b.toString(16)).join('')));
    assert.equal((await driver.open(dev, 'up-legacy', key, { type: 'luks' })).legacyPassphrase, true);
    await driver.close('up-legacy');
    assert.equal((await driver.upgradeKeyslot(dev, key, { legacyPassphrase: true })).upgraded, true);
    assert.equal((await driver.open(dev, 'up-legacy', key, { type: 'luks' })).legacyPassphrase, false);
    await driver.close('up-legacy');
  });

  it('with a second, fast slot for another key, only the slot this key opens is rewritten', async () => {
    const key = randomBytes(32);
    const other = randomBytes(32);
    const dev = await osBrickVolume('luks2', Buffer.from(key.toString('hex')));
    // Another key in slot 1, already fast: the slot to rewrite must be found by trying the key.
    const add = await runner.run(
      ['cryptsetup', '--batch-mode', 'luksAddKey', '--key-file=-', '--keyfile-size=64', '--new-keyfile-size=64', '--pbkdf', 'pbkdf2', '--pbkdf-force-iterations', '1000', dev, '-'],
      { stdin: Buffer.from(key.toString('hex') + other.toString('hex')) },
    );
    assert.equal(add.code, 0, add.stderr.toString());
    assert.equal((await driver.upgradeKeyslot(dev, other)).upgraded, false, "the other key's slot is fast already");
    assert.equal((await driver.upgradeKeyslot(dev, key)).upgraded, true);
    assert.deepEqual((await driver.keyslots(dev)).map((k) => [k.type, k.iterations]), [['pbkdf2', 1000], ['pbkdf2', 1000]]);
    for (const k of [key, other]) {
      await driver.open(dev, 'up-two', k, { type: 'luks' });
      await driver.close('up-two');
    }
  });

  it('a wrong key rewrites nothing: E_WRONG_KEY, header byte-identical', async () => {
    const dev = await osBrickVolume('luks1', Buffer.from(randomBytes(32).toString('hex')));
    const header = await sha(dev, 2 * 1024 * 1024);
    await rejectsWithCode(driver.upgradeKeyslot(dev, randomBytes(32)), 'E_WRONG_KEY');
    assert.equal(await sha(dev, 2 * 1024 * 1024), header);
  });
});
