import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { formatRdev, identifyDevice, rdevAt } from '../../../src/luks/device/identity.js';
import { localDeviceOps } from '../../../src/luks/device/ops.js';
import { rejectsWithCode } from '../../helpers/errors.js';

/** glibc's makedev(): the inverse of what formatRdev() decodes. */
const makedev = (major: bigint, minor: bigint) => ((major & 0xfffn) << 8n) | ((major & ~0xfffn) << 32n) | (minor & 0xffn) | ((minor & ~0xffn) << 12n);

describe('formatRdev()', () => {
  it('decodes Linux dev_t, including majors over 255 and minors over 255 (NVMe, device-mapper)', () => {
    assert.equal(formatRdev(makedev(7n, 3n)), '7:3');
    assert.equal(formatRdev(makedev(253n, 4n)), '253:4');
    assert.equal(formatRdev(makedev(259n, 1048575n)), '259:1048575');
    assert.equal(formatRdev(makedev(4095n, 256n)), '4095:256');
  });
});

describe('identifyDevice() through the in-process device operations', () => {
  const loop = existsSync('/dev/loop0') ? false : 'needs /dev/loop0';
  const ops = localDeviceOps();

  it('answers the real path and major:minor, through a symlink as directly', { skip: loop }, async () => {
    const link = join(mkdtempSync(join(tmpdir(), 'portcullis-ident-')), 'by-id-link');
    symlinkSync('/dev/loop0', link);
    assert.deepEqual(await identifyDevice(ops, '/dev/loop0'), { path: '/dev/loop0', rdev: '7:0' });
    assert.deepEqual(await identifyDevice(ops, link), { path: '/dev/loop0', rdev: '7:0' });
    assert.equal(await rdevAt(ops, '/dev/loop0'), '7:0');
  });

  it('refuses what is not a block device, or not there, with E_DEVICE_NOT_FOUND; rdevAt() answers undefined', async () => {
    const notBlock = await rejectsWithCode(identifyDevice(ops, '/dev/null'), 'E_DEVICE_NOT_FOUND');
    assert.match(notBlock.message, /\/dev\/null \(\/dev\/null\) is not a block device/);
    await rejectsWithCode(identifyDevice(ops, '/dev/portcullis-no-such-device'), 'E_DEVICE_NOT_FOUND');
    assert.equal(await rdevAt(ops, '/dev/null'), undefined);
    assert.equal(await rdevAt(ops, '/dev/portcullis-no-such-device'), undefined);
  });
});
