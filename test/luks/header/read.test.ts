/**
 * readLuksHeader() against headers the real cryptsetup writes (luksFormat
 * works on a plain file, no device-mapper needed): what it reads in-process
 * must be what `cryptsetup luksUUID` and `luksDump` say.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { localDeviceOps } from '../../../src/luks/device/ops.js';
import { readLuksHeader } from '../../../src/luks/header/read.js';
import { keyslotKdfs } from '../../../src/luks/keyslots/kdf.js';
import { rejectsWithCode } from '../../helpers/errors.js';

const dir = mkdtempSync(join(tmpdir(), 'portcullis-header-'));
const ops = localDeviceOps();
const cryptsetup = (args: string[], stdin = '') => execFileSync('cryptsetup', args, { input: stdin, env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' } }).toString('utf8');

function image(name: string, mib = 20): string {
  const path = join(dir, name);
  writeFileSync(path, '');
  truncateSync(path, mib * 1024 * 1024);
  return path;
}

describe('readLuksHeader()', () => {
  for (const type of ['luks1', 'luks2'] as const) {
    it(`${type}: UUID and keyslots as cryptsetup reads them, a second slot with its own PBKDF included`, async () => {
      const path = image(`${type}.img`);
      cryptsetup(['--batch-mode', 'luksFormat', '--type', type, '--key-file=-', '--pbkdf', 'pbkdf2', '--pbkdf-force-iterations', '1000', path], 'a'.repeat(32));
      cryptsetup(['luksAddKey', '--key-file=-', '--keyfile-size=32', '--new-keyfile-size=32', '--pbkdf', 'pbkdf2', '--pbkdf-force-iterations', '2000', path, '-'], 'a'.repeat(32) + 'b'.repeat(32));
      const header = await readLuksHeader(ops, path);
      assert.ok(header !== undefined);
      assert.equal(header.version, type === 'luks1' ? 1 : 2);
      assert.equal(header.uuid, cryptsetup(['luksUUID', path]).trim());
      assert.deepEqual(keyslotKdfs(header.dump).map((k) => [k.slot, k.type, k.iterations]), [[0, 'pbkdf2', 1000], [1, 'pbkdf2', 2000]]);
    });
  }

  it('answers undefined for a device without the LUKS magic (zeros, a file system)', async () => {
    assert.equal(await readLuksHeader(ops, image('zeros.img')), undefined);
    const ext4 = image('ext4.img');
    execFileSync('mkfs.ext4', ['-q', '-F', ext4]);
    assert.equal(await readLuksHeader(ops, ext4), undefined);
  });

  it('a damaged header is E_LUKS_HEADER, never "not LUKS" (which would allow a format)', async () => {
    const path = image('damaged.img');
    cryptsetup(['--batch-mode', 'luksFormat', '--type', 'luks2', '--key-file=-', '--pbkdf', 'pbkdf2', '--pbkdf-force-iterations', '1000', path], 'a'.repeat(32));
    const fd = openSync(path, 'r+');
    writeSync(fd, Buffer.from('{not json'), 0, 9, 4096);
    closeSync(fd);
    await rejectsWithCode(readLuksHeader(ops, path), 'E_LUKS_HEADER');
  });

  it('a device that cannot be read is E_DEVICE_UNREADABLE, never "not LUKS"', async () => {
    await rejectsWithCode(readLuksHeader(ops, join(dir, 'no-such-device')), 'E_DEVICE_UNREADABLE');
  });
});
