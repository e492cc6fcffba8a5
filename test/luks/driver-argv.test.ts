/**
 * The exact command lines the driver runs, through an injected runner that
 * records argv and stdin and answers from a script (os-brick tests its
 * encryptors the same way). It is a fake by design: these tests pin argv and
 * error mapping; the real-kernel behaviour is tested in the VM (*.vm tests).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createLuksDriver } from '../../src/luks/driver.js';
import { hexPassphrase, mangledHexPassphrase } from '../../src/luks/commands/passphrase.js';
import { resolveProvider } from '../../src/luks/providers/index.js';
import { fakeHost, luks1Head, luks2Head, type FakeHost, type Rule } from './fake-host.js';
import { rejectsWithCode, throwsWithCode } from '../helpers/errors.js';

const key = Buffer.from('000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f', 'hex');
const keyHex = key.toString('hex');
const UUID = '8d1b3b7e-0000-4000-8000-000000000001';
/** A blank /dev/vdb: blkid finds nothing; cryptsetup and dm-crypt new enough for the perf flags. */
const blankDevice: Rule[] = [
  ['blkid -p', { code: 2 }],
  ['cryptsetup --help', { stdout: '--perf-no_read_workqueue --perf-no_write_workqueue' }],
  ['dmsetup targets', { stdout: 'crypt            v1.24.0\nstriped          v1.6.0\n' }],
];

/** The fake host, where luksFormat writes a header /dev/vdb then reads back, and an open makes the mapping appear in sysfs. */
function host(rules: Rule[], setup: Parameters<typeof fakeHost>[1] = {}): FakeHost {
  const h: FakeHost = fakeHost(
    [
      ...rules,
      ['cryptsetup --batch-mode luksFormat', (call) => {
        const device = h.devices[call.argv.at(-1) ?? ''];
        if (device !== undefined) device.head = call.argv.includes('luks2') ? luks2Head(UUID) : luks1Head(UUID);
        return {};
      }],
      ['cryptsetup luksOpen', (call) => mapped(call.argv.at(-1) ?? '', call.argv.at(-2) ?? '')],
      ['cryptsetup create', (call) => mapped(call.argv.at(-2) ?? '', call.argv.at(-1) ?? '')],
    ],
    setup,
  );
  /** The kernel made the mapping: sysfs shows it, its node exists. */
  const mapped = (name: string, device: string): Record<string, never> => {
    h.mappings[name] = { uuid: `CRYPT-X-${name}`, slave: device.replace('/dev/', ''), slaveRdev: h.devices[device]?.rdev ?? '' };
    return {};
  };
  return h;
}

function commands(h: { calls: Array<{ argv: string[] }> }, program = 'cryptsetup'): string[][] {
  return h.calls.filter((c) => c.argv[0] === program && c.argv[1] !== '--help').map((c) => c.argv);
}

describe('createLuksDriver() command lines', () => {
  it('format() runs os-brick\'s luksFormat line with the fast PBKDF, key as hex on stdin only', async () => {
    const h = host(blankDevice);
    const uuid = await createLuksDriver({ ops: h }).format('/dev/vdb', key, { type: 'luks', cipher: 'aes-xts-plain64', keySize: 512 });
    assert.equal(uuid, UUID, 'the UUID read back from the header just written');
    const format = h.calls.find((c) => c.argv.includes('luksFormat'));
    assert.deepEqual(format?.argv, [
      'cryptsetup', '--batch-mode', 'luksFormat', '--type', 'luks1', '--key-file=-',
      '--cipher', 'aes-xts-plain64', '--key-size', '512', '--pbkdf', 'pbkdf2', '--pbkdf-force-iterations', '1000', '/dev/vdb',
    ]);
    assert.equal(format?.stdin?.toString('latin1'), keyHex, 'the passphrase is the lower-case hex of the key, no newline');
    for (const call of h.calls) {
      const line = call.argv.join(' ');
      assert.ok(!line.includes(keyHex) && !line.includes(key.toString('latin1')), `no key in argv: ${line}`);
    }
  });

  it('format() spawns two processes (blkid -p, luksFormat): the LUKS check and the first MiB are read in-process, before anything is written', async () => {
    const h = host(blankDevice);
    await createLuksDriver({ ops: h }).format('/dev/vdb', key, { type: 'luks2', label: 'vol', pbkdf: { type: 'default' } });
    assert.deepEqual(h.calls.map((c) => c.argv.slice(0, 3).join(' ')), ['blkid -p -o', 'cryptsetup --batch-mode luksFormat']);
    assert.deepEqual(h.calls[1]?.argv, ['cryptsetup', '--batch-mode', 'luksFormat', '--type', 'luks2', '--key-file=-', '--label', 'vol', '/dev/vdb']);
    assert.ok(h.opsAsked.filter((o) => o === 'read').length >= 2, 'header and first MiB read before the format');
  });

  it('format() refuses a device with a file system signature, naming it and its offset, and runs no luksFormat', async () => {
    const h = host([
      ['blkid -p', { code: 0, stdout: 'TYPE=ext4\nUSAGE=filesystem\n' }],
      ['wipefs --no-act --json', { stdout: '{"signatures":[{"device":"vdb","offset":"0x438","type":"ext4"}]}' }],
      ...blankDevice,
    ]);
    const err = await rejectsWithCode(createLuksDriver({ ops: h }).format('/dev/vdb', key, { type: 'luks' }), 'E_DEVICE_NOT_BLANK');
    assert.equal(err.message, 'Device /dev/vdb is not blank (ext4 signature at 0x438); refusing to format');
    assert.ok(!h.calls.some((c) => c.argv.includes('luksFormat')));
  });

  it('format() refuses a LUKS header, non-zero data, a read error and a damaged header, and runs no luksFormat', async () => {
    const data = host(blankDevice, { devices: { '/dev/vdb': { rdev: '253:16', head: Buffer.concat([Buffer.alloc(512), Buffer.from([7])]) } } });
    assert.match((await rejectsWithCode(createLuksDriver({ ops: data }).format('/dev/vdb', key, { type: 'luks' }), 'E_DEVICE_NOT_BLANK')).message, /non-zero data at 0x200/);
    const luks = host(blankDevice, { devices: { '/dev/vdb': { rdev: '253:16', head: luks2Head(UUID) } } });
    assert.match((await rejectsWithCode(createLuksDriver({ ops: luks }).format('/dev/vdb', key, { type: 'luks' }), 'E_DEVICE_NOT_BLANK')).message, /already holds a LUKS header/);
    // os-brick formats when isLuks fails for any reason; a read error must never count as "not LUKS".
    const io = host(blankDevice, { devices: { '/dev/vdb': { rdev: '253:16', readError: 'EIO' } } });
    assert.match((await rejectsWithCode(createLuksDriver({ ops: io }).format('/dev/vdb', key, { type: 'luks' }), 'E_DEVICE_UNREADABLE')).message, /EIO/);
    const broken = luks2Head(UUID);
    broken.write('{broken', 4096);
    const damaged = host(blankDevice, { devices: { '/dev/vdb': { rdev: '253:16', head: broken } } });
    await rejectsWithCode(createLuksDriver({ ops: damaged }).format('/dev/vdb', key, { type: 'luks' }), 'E_LUKS_HEADER');
    for (const h of [data, luks, io, damaged]) assert.ok(!h.calls.some((c) => c.argv.includes('luksFormat')));
  });

  it('open() runs luksOpen with the perf flags the kernel supports, and answers the mapper path and the UUID from the header', async () => {
    const h = host(blankDevice, { devices: { '/dev/vdb': { rdev: '253:16', head: luks1Head(UUID) } } });
    const result = await createLuksDriver({ ops: h }).open('/dev/vdb', 'crypt-vol1', key, { type: 'luks', allowDiscards: true });
    assert.deepEqual([result.name, result.mapperPath, result.opened, result.legacyPassphrase, result.uuid], ['crypt-vol1', '/dev/mapper/crypt-vol1', true, false, UUID]);
    assert.deepEqual(commands(h).find((a) => a[1] === 'luksOpen'), [
      'cryptsetup', 'luksOpen', '--key-file=-', '--allow-discards', '--perf-no_read_workqueue', '--perf-no_write_workqueue', '/dev/vdb', 'crypt-vol1',
    ]);
  });

  it('open() spawns exactly one process once the perf flags are known: cryptsetup luksOpen', async () => {
    const h = host(blankDevice, { devices: { '/dev/vdb': { rdev: '253:16', head: luks2Head(UUID) } } });
    const driver = createLuksDriver({ ops: h });
    await driver.open('/dev/vdb', 'first', key, { type: 'luks2' });
    const before = h.calls.length;
    await driver.open('/dev/vdb', 'again', key, { type: 'luks2' });
    assert.deepEqual(h.calls.slice(before).map((c) => c.argv[1]), ['luksOpen']);
  });

  it('open() leaves out the perf flags on a kernel whose dm-crypt predates them', async () => {
    const h = host([['dmsetup targets', { stdout: 'crypt v1.19.0\n' }], ...blankDevice], { devices: { '/dev/vdb': { rdev: '253:16', head: luks2Head(UUID) } } });
    await createLuksDriver({ ops: h }).open('/dev/vdb', 'v', key, { type: 'luks2' });
    assert.deepEqual(commands(h).find((a) => a[1] === 'luksOpen'), ['cryptsetup', 'luksOpen', '--key-file=-', '/dev/vdb', 'v']);
  });

  it('open() of a plain volume uses os-brick\'s `cryptsetup create` line, after blkid found nothing there', async () => {
    const h = host(blankDevice);
    await createLuksDriver({ ops: h }).open('/dev/vdb', 'eph', key, { type: 'plain', cipher: 'aes-xts-plain64', keySize: 256, perfNoWorkqueue: false });
    assert.deepEqual(h.calls.map((c) => c.argv[0]), ['blkid', 'cryptsetup']);
    const create = h.calls.find((c) => c.argv[1] === 'create');
    assert.deepEqual(create?.argv, ['cryptsetup', 'create', '--key-file=-', '--cipher', 'aes-xts-plain64', '--key-size', '256', 'eph', '/dev/vdb']);
    assert.equal(create?.stdin?.toString('latin1'), keyHex);
  });

  it('open() is idempotent for the same device (no process at all) and a 409-style conflict for another', async () => {
    const mapped = (slaveRdev: string) => ({ devices: { '/dev/vdb': { rdev: '253:16', head: luks1Head(UUID) } }, mappings: { v: { uuid: `CRYPT-LUKS1-${UUID.replaceAll('-', '')}-v`, slave: 'vdb', slaveRdev } } });
    const same = host(blankDevice, mapped('253:16'));
    const answer = await createLuksDriver({ ops: same }).open('/dev/vdb', 'v', key, { type: 'luks' });
    assert.deepEqual([answer.opened, answer.status?.type, answer.status?.device, answer.uuid], [false, 'LUKS1', '/dev/vdb', UUID]);
    assert.deepEqual(same.calls, [], 'the kernel answered through sysfs; nothing spawned');
    const other = host(blankDevice, mapped('253:32'));
    await rejectsWithCode(createLuksDriver({ ops: other }).open('/dev/vdb', 'v', key, { type: 'luks' }), 'E_MAPPING_IN_USE');
  });

  it('open() is idempotent when the kernel names the same major:minor another way (dm-3 for /dev/mapper/mpatha)', async () => {
    const h = host(blankDevice, {
      devices: { '/dev/mapper/mpatha': { rdev: '253:3', head: luks1Head(UUID) } },
      mappings: { v: { uuid: 'CRYPT-LUKS1-x-v', slave: 'dm-3', slaveRdev: '253:3' } },
    });
    assert.equal((await createLuksDriver({ ops: h }).open('/dev/mapper/mpatha', 'v', key, { type: 'luks' })).opened, false);
  });

  it('format() and open() refuse a device path that names another major:minor than the request pinned (E_DEVICE_CHANGED), and write nothing', async () => {
    for (const step of ['format', 'open'] as const) {
      const h = host(blankDevice, { devices: { '/dev/vdb': { rdev: '253:16', ...(step === 'open' ? { head: luks2Head(UUID) } : {}) } } });
      const driver = createLuksDriver({ ops: h });
      const pinned = await driver.identify('/dev/vdb');
      assert.equal(pinned.rdev, '253:16');
      // Hot-plug gives the path to another device after the request pinned it.
      h.devices['/dev/vdb'] = { ...(h.devices['/dev/vdb'] ?? { rdev: '' }), rdev: '253:17' };
      const attempt = step === 'format' ? driver.format(pinned, key, { type: 'luks2' }) : driver.open(pinned, 'v', key, { type: 'luks2' });
      const err = await rejectsWithCode(attempt, 'E_DEVICE_CHANGED');
      assert.match(err.message, /\/dev\/vdb is no longer device 253:16 \(now 253:17\)/);
      assert.deepEqual(commands(h).filter((argv) => ['luksFormat', 'luksOpen'].includes(argv[1] ?? '') || argv.includes('luksFormat')), [], `${step}: nothing written`);
    }
  });

  it('open() falls back to os-brick\'s old mangled passphrase after a wrong key, as os-brick does', async () => {
    let attempts = 0;
    const h = host([['cryptsetup luksOpen', () => (++attempts === 1 ? { code: 2, stderr: 'No key available with this passphrase.\n' } : {})], ...blankDevice], {
      devices: { '/dev/vdb': { rdev: '253:16', head: luks1Head(UUID) } },
    });
    const result = await createLuksDriver({ ops: h }).open('/dev/vdb', 'v', key, { type: 'luks' });
    assert.equal(result.legacyPassphrase, true);
    const opens = h.calls.filter((c) => c.argv[1] === 'luksOpen');
    assert.deepEqual(opens.map((c) => c.stdin?.toString('latin1')), [keyHex, mangledHexPassphrase(key).toString('latin1')]);
  });

  it('maps cryptsetup exit codes 1–5 to stable codes, quoting stderr but never the key', async () => {
    const expected = { 1: 'E_CRYPTSETUP_PARAMS', 2: 'E_WRONG_KEY', 3: 'E_CRYPTSETUP_NOMEM', 4: 'E_DEVICE_WRONG', 5: 'E_DEVICE_BUSY' } as const;
    for (const [exit, code] of Object.entries(expected)) {
      const h = host([['cryptsetup luksOpen', { code: Number(exit), stderr: 'it went wrong' }], ...blankDevice], { devices: { '/dev/vdb': { rdev: '253:16', head: luks1Head(UUID) } } });
      // A key whose mangled form equals its hex, so no fallback attempt muddies exit 2.
      const err = await rejectsWithCode(createLuksDriver({ ops: h }).open('/dev/vdb', 'v', Buffer.alloc(32, 0xab), { type: 'luks' }), code);
      assert.match(err.message, /it went wrong/);
      assert.ok(!err.message.includes('ab'.repeat(32)));
    }
  });

  it('close() is one process: absent (exit 4) is success; busy (exit 5) is E_DEVICE_BUSY; deferred uses --deferred and says whether the kernel kept it', async () => {
    const absent = host([['cryptsetup close', { code: 4 }]]);
    assert.deepEqual(await createLuksDriver({ ops: absent }).close('gone'), { closed: false, pending: false });
    const busy = host([['cryptsetup close', { code: 5, stderr: 'Device v is still in use.' }]]);
    await rejectsWithCode(createLuksDriver({ ops: busy }).close('v'), 'E_DEVICE_BUSY');
    const held = host([], { mappings: { v: { uuid: 'CRYPT-PLAIN-v', slave: 'vdb', slaveRdev: '253:16' } } });
    assert.deepEqual(await createLuksDriver({ ops: held }).close('v', { deferred: true }), { closed: true, pending: true });
    assert.deepEqual(held.calls.map((c) => c.argv), [['cryptsetup', 'close', '--deferred', 'v']]);
  });

  it('a command that outlives its timeout is E_CRYPTSETUP_TIMEOUT', async () => {
    const h = host([['cryptsetup close', { code: null, signal: 'SIGKILL', timedOut: true }]]);
    await rejectsWithCode(createLuksDriver({ ops: h, timeoutMs: 5 }).close('v'), 'E_CRYPTSETUP_TIMEOUT');
  });

  it('rejects bad names, device paths and short keys before running anything', async () => {
    const h = host(blankDevice);
    const driver = createLuksDriver({ ops: h });
    for (const name of ['', '../x', 'a/b', '-flag', 'x'.repeat(128)]) await rejectsWithCode(driver.open('/dev/vdb', name, key, { type: 'luks' }), 'E_LUKS_INVALID_ARGUMENT');
    for (const device of ['vdb', '/etc/passwd', '/dev/../etc/shadow', '/dev/vdb; rm -rf /']) await rejectsWithCode(driver.open(device, 'v', key, { type: 'luks' }), 'E_LUKS_INVALID_ARGUMENT');
    assert.equal(h.calls.length, 0);
    await rejectsWithCode(driver.open('/dev/vdb', 'v', Buffer.alloc(8), { type: 'luks' }), 'E_LUKS_INVALID_ARGUMENT');
    assert.ok(!h.calls.some((c) => c.argv[1] === 'luksOpen'));
  });

  it('status() reads the mapping from sysfs (type from the dm UUID, backing device and its major:minor) and spawns nothing', async () => {
    const h = host([], { mappings: { other: { uuid: 'LVM-x', slave: 'sda', slaveRdev: '8:0' }, v: { uuid: 'CRYPT-LUKS2-abc-v', slave: 'loop3', slaveRdev: '7:3', sectors: 4096 } } });
    const status = await createLuksDriver({ ops: h }).status('v');
    assert.deepEqual([status?.type, status?.device, status?.deviceRdev, status?.sizeSectors, status?.readOnly], ['LUKS2', '/dev/loop3', '7:3', 4096, false]);
    assert.equal(await createLuksDriver({ ops: h }).status('absent'), undefined);
    assert.deepEqual(h.calls, []);
  });

  it('list() reads names from dmsetup ls and status from cryptsetup, never dmsetup table', async () => {
    const h = host([
      ['dmsetup ls', { stdout: 'vol-a\t(253:0)\nvol-b\t(253:1)\n' }],
      ['cryptsetup status vol-a', { stdout: '/dev/mapper/vol-a is active and is in use.\n  type:    LUKS2\n  cipher:  aes-xts-plain64\n  keysize: 512 bits\n  device:  /dev/loop0\n  offset:  32768 sectors\n  size:    8192 sectors\n  mode:    read/write\n' }],
      ['cryptsetup status vol-b', { code: 4 }],
    ]);
    const list = await createLuksDriver({ ops: h }).list();
    assert.deepEqual(list.map((s) => [s.name, s.type, s.keySizeBits, s.device, s.sizeSectors, s.inUse]), [['vol-a', 'LUKS2', 512, '/dev/loop0', 8192, true]]);
    assert.ok(!h.calls.some((c) => c.argv.includes('table')));
  });
});

describe('hexPassphrase() and mangledHexPassphrase()', () => {
  it('match Python\'s binascii.hexlify and os-brick\'s old hex(x).replace("0x", "")', () => {
    assert.equal(hexPassphrase(key).toString('latin1'), keyHex);
    const bytes = Buffer.from([0x00, 0x0f, 0x10, 0xff]);
    assert.equal(mangledHexPassphrase(bytes).toString('latin1'), '0f10ff');
  });
});

describe('resolveProvider()', () => {
  it('accepts os-brick format names and encryptor class paths, old and new', () => {
    assert.equal(resolveProvider('luks'), 'luks');
    assert.equal(resolveProvider('LUKS2'), 'luks2');
    assert.equal(resolveProvider('nova.volume.encryptors.luks.LuksEncryptor'), 'luks');
    assert.equal(resolveProvider('os_brick.encryptors.luks.Luks2Encryptor'), 'luks2');
    assert.equal(resolveProvider('CryptsetupEncryptor'), 'plain');
    assert.equal(resolveProvider('nova.volume.encryptors.nop.NoopEncryptor'), 'nop');
  });

  it('refuses anything else with E_LUKS_INVALID_ARGUMENT', () => {
    throwsWithCode(() => resolveProvider('bitlocker'), 'E_LUKS_INVALID_ARGUMENT');
  });
});
