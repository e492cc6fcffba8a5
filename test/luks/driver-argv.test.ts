/**
 * The exact command lines the driver runs, through an injected runner that
 * records argv and stdin and answers from a script (os-brick tests its
 * encryptors the same way). It is a fake by design: these tests pin argv and
 * error mapping; the real-kernel behaviour is tested in the VM (test/luks/vm).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createLuksDriver } from '../../src/luks/driver.js';
import { hexPassphrase, mangledHexPassphrase } from '../../src/luks/passphrase.js';
import { resolveProvider } from '../../src/luks/providers/index.js';
import type { CommandRunner, RunOptions, RunResult } from '../../src/luks/runner.js';
import { rejectsWithCode, throwsWithCode } from '../helpers/errors.js';

interface Call {
  argv: string[];
  stdin: Buffer | undefined;
}

type Answer = Partial<Omit<RunResult, 'stdout' | 'stderr'>> & { stdout?: string; stderr?: string };

/** Answers by the first rule whose prefix matches argv (joined by spaces); default exit 0. */
function scriptedRunner(rules: Array<[string, Answer | ((call: Call) => Answer)]>): CommandRunner & { calls: Call[] } {
  const calls: Call[] = [];
  return {
    calls,
    async run(argv: readonly string[], options: RunOptions = {}) {
      const call = { argv: [...argv], stdin: options.stdin === undefined ? undefined : Buffer.from(options.stdin) };
      calls.push(call);
      const line = argv.join(' ');
      const rule = rules.find(([prefix]) => line.startsWith(prefix));
      const answer = rule === undefined ? {} : typeof rule[1] === 'function' ? rule[1](call) : rule[1];
      return { code: answer.code ?? 0, stdout: Buffer.from(answer.stdout ?? ''), stderr: Buffer.from(answer.stderr ?? ''), ...(answer.timedOut ? { timedOut: true } : {}) };
    },
  };
}

const key = Buffer.from('000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f', 'hex');
const keyHex = key.toString('hex');
const blankDevice: Array<[string, Answer]> = [
  ['readlink -e /dev/vdb', { stdout: '/dev/vdb\n' }],
  ['stat -c %t:%T|%F /dev/vdb', { stdout: 'fd:10|block special file\n' }],
  ['cryptsetup isLuks', { code: 1, stdout: 'Command failed with code -1 (wrong or missing parameters).\n' }],
  ['dd if=/dev/vdb', { code: 0 }],
  ['blkid -p', { code: 2 }],
  ['cmp -n 1048576 /dev/vdb /dev/zero', { code: 0 }],
  ['cryptsetup luksUUID', { stdout: '8d1b3b7e-0000-4000-8000-000000000001\n' }],
  ['cryptsetup status', { code: 4 }],
  ['cryptsetup --help', { stdout: '--perf-no_read_workqueue --perf-no_write_workqueue' }],
  ['dmsetup targets', { stdout: 'crypt            v1.24.0\nstriped          v1.6.0\n' }],
];

function commands(runner: { calls: Call[] }, program = 'cryptsetup'): string[][] {
  return runner.calls.filter((c) => c.argv[0] === program && c.argv[1] !== '--help').map((c) => c.argv);
}

describe('createLuksDriver() command lines', () => {
  it('format() runs os-brick\'s luksFormat line with the fast PBKDF, key as hex on stdin only', async () => {
    const runner = scriptedRunner(blankDevice);
    const driver = createLuksDriver({ runner });
    const uuid = await driver.format('/dev/vdb', key, { type: 'luks', cipher: 'aes-xts-plain64', keySize: 512 });
    assert.equal(uuid, '8d1b3b7e-0000-4000-8000-000000000001');
    const format = runner.calls.find((c) => c.argv.includes('luksFormat'));
    assert.deepEqual(format?.argv, [
      'cryptsetup', '--batch-mode', 'luksFormat', '--type', 'luks1', '--key-file=-',
      '--cipher', 'aes-xts-plain64', '--key-size', '512', '--pbkdf', 'pbkdf2', '--pbkdf-force-iterations', '1000', '/dev/vdb',
    ]);
    assert.equal(format?.stdin?.toString('latin1'), keyHex, 'the passphrase is the lower-case hex of the key, no newline');
    for (const call of runner.calls) {
      const line = call.argv.join(' ');
      assert.ok(!line.includes(keyHex) && !line.includes(key.toString('latin1')), `no key in argv: ${line}`);
    }
  });

  it('format() checks LUKS, signatures and the first MiB before anything is written', async () => {
    const runner = scriptedRunner(blankDevice);
    await createLuksDriver({ runner }).format('/dev/vdb', key, { type: 'luks2', label: 'vol', pbkdf: { type: 'default' } });
    const order = runner.calls.map((c) => c.argv.slice(0, 2).join(' '));
    const formatAt = order.indexOf('cryptsetup --batch-mode');
    assert.ok(formatAt > order.indexOf('cryptsetup isLuks') && formatAt > order.indexOf('blkid -p') && formatAt > order.indexOf('cmp -n'));
    assert.deepEqual(runner.calls[formatAt]?.argv, ['cryptsetup', '--batch-mode', 'luksFormat', '--type', 'luks2', '--key-file=-', '--label', 'vol', '/dev/vdb']);
  });

  it('format() refuses a device with a file system signature, naming it and its offset, and runs no luksFormat', async () => {
    const runner = scriptedRunner([
      ['blkid -p', { code: 0, stdout: 'TYPE=ext4\nUSAGE=filesystem\n' }],
      ['wipefs --no-act --json', { stdout: '{"signatures":[{"device":"vdb","offset":"0x438","type":"ext4"}]}' }],
      ...blankDevice,
    ]);
    const err = await rejectsWithCode(createLuksDriver({ runner }).format('/dev/vdb', key, { type: 'luks' }), 'E_DEVICE_NOT_BLANK');
    assert.equal(err.message, 'Device /dev/vdb is not blank (ext4 signature at 0x438); refusing to format');
    assert.ok(!runner.calls.some((c) => c.argv.includes('luksFormat')));
  });

  it('format() refuses non-zero data, a read error, and an isLuks that failed for an unclear reason', async () => {
    const data = scriptedRunner([['cmp -n', { code: 1, stdout: '/dev/vdb /dev/zero differ: byte 513, line 1\n' }], ...blankDevice]);
    assert.match((await rejectsWithCode(createLuksDriver({ runner: data }).format('/dev/vdb', key, { type: 'luks' }), 'E_DEVICE_NOT_BLANK')).message, /non-zero data at 0x200/);
    const io = scriptedRunner([['cmp -n', { code: 2, stderr: 'cmp: /dev/vdb: Input/output error\n' }], ...blankDevice]);
    await rejectsWithCode(createLuksDriver({ runner: io }).format('/dev/vdb', key, { type: 'luks' }), 'E_DEVICE_UNREADABLE');
    // cryptsetup says the same for "not LUKS" and "cannot read"; the header-area read tells them apart.
    const unclear = scriptedRunner([['dd if=/dev/vdb', { code: 1, stderr: 'dd: error reading /dev/vdb: Input/output error\n' }], ...blankDevice]);
    await rejectsWithCode(createLuksDriver({ runner: unclear }).format('/dev/vdb', key, { type: 'luks' }), 'E_DEVICE_UNREADABLE');
    for (const runner of [data, io, unclear]) assert.ok(!runner.calls.some((c) => c.argv.includes('luksFormat')));
  });

  it('open() runs luksOpen with the perf flags the kernel supports, and answers the mapper path', async () => {
    const runner = scriptedRunner([['test -b', { code: 0 }], ...blankDevice]);
    const result = await createLuksDriver({ runner }).open('/dev/vdb', 'crypt-vol1', key, { type: 'luks', allowDiscards: true });
    assert.deepEqual([result.name, result.mapperPath, result.opened, result.legacyPassphrase], ['crypt-vol1', '/dev/mapper/crypt-vol1', true, false]);
    assert.deepEqual(commands(runner).find((a) => a[1] === 'luksOpen'), [
      'cryptsetup', 'luksOpen', '--key-file=-', '--allow-discards', '--perf-no_read_workqueue', '--perf-no_write_workqueue', '/dev/vdb', 'crypt-vol1',
    ]);
  });

  it('open() leaves out the perf flags on a kernel whose dm-crypt predates them', async () => {
    const runner = scriptedRunner([['dmsetup targets', { stdout: 'crypt v1.19.0\n' }], ['test -b', { code: 0 }], ...blankDevice]);
    await createLuksDriver({ runner }).open('/dev/vdb', 'v', key, { type: 'luks2' });
    assert.deepEqual(commands(runner).find((a) => a[1] === 'luksOpen'), ['cryptsetup', 'luksOpen', '--key-file=-', '/dev/vdb', 'v']);
  });

  it('open() of a plain volume uses os-brick\'s `cryptsetup create` line', async () => {
    const runner = scriptedRunner([['test -b', { code: 0 }], ...blankDevice]);
    await createLuksDriver({ runner }).open('/dev/vdb', 'eph', key, { type: 'plain', cipher: 'aes-xts-plain64', keySize: 256, perfNoWorkqueue: false });
    const create = runner.calls.find((c) => c.argv[1] === 'create');
    assert.deepEqual(create?.argv, ['cryptsetup', 'create', '--key-file=-', '--cipher', 'aes-xts-plain64', '--key-size', '256', 'eph', '/dev/vdb']);
    assert.equal(create?.stdin?.toString('latin1'), keyHex);
  });

  it('open() is idempotent for the same device and a 409-style conflict for another', async () => {
    const active = (device: string): Array<[string, Answer]> => [
      ['cryptsetup status', { stdout: `/dev/mapper/v is active.\n  type:    LUKS1\n  device:  ${device}\n  mode:    read/write\n` }],
      ['test -b', { code: 0 }],
    ];
    const same = scriptedRunner([...active('/dev/vdb'), ...blankDevice]);
    assert.equal((await createLuksDriver({ runner: same }).open('/dev/vdb', 'v', key, { type: 'luks' })).opened, false);
    assert.ok(!same.calls.some((c) => c.argv[1] === 'luksOpen'));
    const other = scriptedRunner([...active('/dev/vdc'), ...blankDevice]);
    await rejectsWithCode(createLuksDriver({ runner: other }).open('/dev/vdb', 'v', key, { type: 'luks' }), 'E_MAPPING_CONFLICT');
  });

  it('open() is idempotent when the kernel names the same major:minor another way (/dev/dm-3 for /dev/mapper/mpatha)', async () => {
    const runner = scriptedRunner([
      ['cryptsetup status', { stdout: '/dev/mapper/v is active.\n  type:    LUKS1\n  device:  /dev/dm-3\n  mode:    read/write\n' }],
      ['readlink -e /dev/mapper/mpatha', { stdout: '/dev/mapper/mpatha\n' }],
      ['stat -c %t:%T|%F /dev/mapper/mpatha', { stdout: 'fd:3|block special file\n' }],
      ['stat -c %t:%T|%F /dev/dm-3', { stdout: 'fd:3|block special file\n' }],
      ['test -b', { code: 0 }],
      ...blankDevice,
    ]);
    assert.equal((await createLuksDriver({ runner }).open('/dev/mapper/mpatha', 'v', key, { type: 'luks' })).opened, false);
  });

  it('format() and open() refuse a device path that names another major:minor than the request pinned (E_DEVICE_CHANGED), and write nothing', async () => {
    for (const step of ['format', 'open'] as const) {
      let stats = 0;
      // The first stat pins 253:16; by the next, hot-plug has given the path to another device.
      const runner = scriptedRunner([['stat -c %t:%T|%F /dev/vdb', () => ({ stdout: (stats++ === 0 ? 'fd:10' : 'fd:11') + '|block special file\n' })], ...blankDevice]);
      const driver = createLuksDriver({ runner });
      const pinned = await driver.identify('/dev/vdb');
      assert.equal(pinned.rdev, '253:16');
      const attempt = step === 'format' ? driver.format(pinned, key, { type: 'luks2' }) : driver.open(pinned, 'v', key, { type: 'luks2' });
      const err = await rejectsWithCode(attempt, 'E_DEVICE_CHANGED');
      assert.match(err.message, /\/dev\/vdb is no longer device 253:16 \(now 253:17\)/);
      assert.deepEqual(commands(runner).filter((argv) => ['luksFormat', 'luksOpen'].includes(argv[1] ?? '') || argv.includes('luksFormat')), [], `${step}: nothing written`);
    }
  });

  it('open() falls back to os-brick\'s old mangled passphrase after a wrong key, as os-brick does', async () => {
    let attempts = 0;
    const runner = scriptedRunner([
      ['cryptsetup luksOpen', () => (++attempts === 1 ? { code: 2, stderr: 'No key available with this passphrase.\n' } : {})],
      ['test -b', { code: 0 }],
      ...blankDevice,
    ]);
    const result = await createLuksDriver({ runner }).open('/dev/vdb', 'v', key, { type: 'luks' });
    assert.equal(result.legacyPassphrase, true);
    const opens = runner.calls.filter((c) => c.argv[1] === 'luksOpen');
    assert.deepEqual(opens.map((c) => c.stdin?.toString('latin1')), [keyHex, mangledHexPassphrase(key).toString('latin1')]);
  });

  it('maps cryptsetup exit codes 1–5 to stable codes, quoting stderr but never the key', async () => {
    const expected = { 1: 'E_CRYPTSETUP_PARAMS', 2: 'E_WRONG_KEY', 3: 'E_CRYPTSETUP_NOMEM', 4: 'E_DEVICE_WRONG', 5: 'E_DEVICE_BUSY' } as const;
    for (const [exit, code] of Object.entries(expected)) {
      const runner = scriptedRunner([['cryptsetup luksOpen', { code: Number(exit), stderr: 'it went wrong' }], ['cryptsetup create', { code: Number(exit) }], ...blankDevice]);
      // A key whose mangled form equals its hex, so no fallback attempt muddies exit 2.
      const err = await rejectsWithCode(createLuksDriver({ runner }).open('/dev/vdb', 'v', Buffer.alloc(32, 0xab), { type: 'luks' }), code);
      assert.match(err.message, /it went wrong/);
      assert.ok(!err.message.includes('ab'.repeat(32)));
    }
  });

  it('close() of an absent mapping (exit 4) is success; busy (exit 5) is E_DEVICE_BUSY; deferred uses --deferred', async () => {
    const absent = scriptedRunner([['cryptsetup close', { code: 4 }]]);
    assert.deepEqual(await createLuksDriver({ runner: absent }).close('gone'), { closed: false });
    const busy = scriptedRunner([['cryptsetup close', { code: 5, stderr: 'Device v is still in use.' }]]);
    await rejectsWithCode(createLuksDriver({ runner: busy }).close('v'), 'E_DEVICE_BUSY');
    const deferred = scriptedRunner([]);
    await createLuksDriver({ runner: deferred }).close('v', { deferred: true });
    assert.deepEqual(deferred.calls[0]?.argv, ['cryptsetup', 'close', '--deferred', 'v']);
  });

  it('a command that outlives its timeout is E_CRYPTSETUP_TIMEOUT', async () => {
    const runner = scriptedRunner([['cryptsetup close', { code: null, signal: 'SIGKILL', timedOut: true }]]);
    await rejectsWithCode(createLuksDriver({ runner, timeoutMs: 5 }).close('v'), 'E_CRYPTSETUP_TIMEOUT');
  });

  it('rejects bad names, device paths and short keys before running anything', async () => {
    const runner = scriptedRunner(blankDevice);
    const driver = createLuksDriver({ runner });
    for (const name of ['', '../x', 'a/b', '-flag', 'x'.repeat(128)]) await rejectsWithCode(driver.open('/dev/vdb', name, key, { type: 'luks' }), 'E_LUKS_INVALID_ARGUMENT');
    for (const device of ['vdb', '/etc/passwd', '/dev/../etc/shadow', '/dev/vdb; rm -rf /']) await rejectsWithCode(driver.open(device, 'v', key, { type: 'luks' }), 'E_LUKS_INVALID_ARGUMENT');
    assert.equal(runner.calls.length, 0);
    await rejectsWithCode(driver.open('/dev/vdb', 'v', Buffer.alloc(8), { type: 'luks' }), 'E_LUKS_INVALID_ARGUMENT');
    assert.ok(!runner.calls.some((c) => c.argv[1] === 'luksOpen'));
  });

  it('list() reads names from dmsetup ls and status from cryptsetup, never dmsetup table', async () => {
    const runner = scriptedRunner([
      ['dmsetup ls', { stdout: 'vol-a\t(253:0)\nvol-b\t(253:1)\n' }],
      ['cryptsetup status vol-a', { stdout: '/dev/mapper/vol-a is active and is in use.\n  type:    LUKS2\n  cipher:  aes-xts-plain64\n  keysize: 512 bits\n  device:  /dev/loop0\n  offset:  32768 sectors\n  size:    8192 sectors\n  mode:    read/write\n' }],
      ['cryptsetup status vol-b', { code: 4 }],
    ]);
    const list = await createLuksDriver({ runner }).list();
    assert.deepEqual(list.map((s) => [s.name, s.type, s.keySizeBits, s.device, s.sizeSectors, s.inUse]), [['vol-a', 'LUKS2', 512, '/dev/loop0', 8192, true]]);
    assert.ok(!runner.calls.some((c) => c.argv.includes('table')));
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
