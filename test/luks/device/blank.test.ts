/**
 * The safe-format rule over the named fake host: a device is blank only if
 * everything the format will write (up to its data offset: 16 MiB for LUKS2,
 * 2 MiB for LUKS1) reads as zeros. On a real kernel, with a real file system
 * 1 MiB in behind a wiped partition table: erase-safety.vm.test.ts.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createLuksDriver } from '../../../src/luks/driver.js';
import { rejectsWithCode } from '../../helpers/errors.js';
import { fakeHost } from '../fake-host.js';

const key = Buffer.alloc(32, 7);
const MiB = 1024 * 1024;

/** A device of `size` bytes, zero but for one byte at `at`. */
function deviceWith(at: number | undefined, size = 64 * MiB) {
  const head = Buffer.alloc(at === undefined ? 0 : at + 1);
  if (at !== undefined) head[at] = 0x53;
  return fakeHost(
    [
      ['blkid -p', { code: 2 }],
      ['cryptsetup --batch-mode luksFormat', () => ({})],
    ],
    { devices: { '/dev/vdb': { rdev: '253:16', head, size } } },
  );
}

const formats = (h: ReturnType<typeof fakeHost>) => h.calls.filter((c) => c.argv.includes('luksFormat'));

describe('format(): provably blank covers all the format writes', () => {
  for (const [type, span] of [['luks2', 16 * MiB], ['luks', 2 * MiB]] as const) {
    it(`${type}: data just inside the ${span / MiB} MiB the format overwrites (a file system 1 MiB in, behind a wiped partition table) is not blank`, async () => {
      const h = deviceWith(span - 512);
      const err = await rejectsWithCode(createLuksDriver({ ops: h }).format('/dev/vdb', key, { type }), 'E_DEVICE_NOT_BLANK');
      assert.equal((err as unknown as { details: { offset: number } }).details.offset, span - 512);
      assert.deepEqual(formats(h), []);
    });

    it(`${type}: data past the ${span / MiB} MiB is outside what the format writes, so the device is blank`, async () => {
      const h = deviceWith(span + 4096);
      await createLuksDriver({ ops: h }).format('/dev/vdb', key, { type }).catch(() => undefined);
      assert.equal(formats(h).length, 1);
    });

    it(`${type}: a device smaller than the header is refused before anything is written`, async () => {
      const h = deviceWith(undefined, span - MiB);
      await rejectsWithCode(createLuksDriver({ ops: h }).format('/dev/vdb', key, { type }), 'E_DEVICE_NOT_BLANK');
      assert.deepEqual(formats(h), []);
    });
  }

  it('the ext4 superblock 1 MiB + 1 KiB in is found, where the old 1 MiB check saw only zeros', async () => {
    const h = deviceWith(MiB + 1024 + 56);
    await rejectsWithCode(createLuksDriver({ ops: h }).format('/dev/vdb', key, { type: 'luks2' }), 'E_DEVICE_NOT_BLANK');
    assert.deepEqual(formats(h), []);
  });
});
