/**
 * portcullis-helper's operations on a real kernel's dm-crypt (test/vm: the
 * qemu guest, or this host in direct mode), loop devices standing in for
 * volumes. Each step is one `portcullis-helper --stdio` run with a batch of
 * requests; cryptsetup and dmsetup on the same kernel are the oracle.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { Op, Status, Tag, decodeAll, encodeRequest, json, message, slot, type Fields, type Response } from './codec.js';
import { HELPER_BINARIES } from './process.js';
import { HelperSession } from './vm-session.js';

let s: HelperSession;
before(async () => {
  s = await HelperSession.start();
});
after(() => s?.cleanup());

const FAST: Fields = [[Tag.PBKDF, 'pbkdf2'], [Tag.ITERATIONS, { u32: 1000 }]];
const TOKEN = '{"type":"portcullis","keyslots":[],"key_id":"0f1e2d3c"}';

describe('LUKS2 through the helper', () => {
  const key = randomBytes(32);
  const other = randomBytes(24);
  let dev: { path: string; rdev: string };
  let uuid: string;
  const name = 'ptc-l2';
  const devFields = (): Fields => [[Tag.PATH, dev.path], [Tag.RDEV, dev.rdev]];

  it('runs the binary from this worktree in the guest (HELLO)', async () => {
    s.secret(key);
    s.secret(other);
    const hello = json(await s.one(Op.HELLO, [], Status.OK)) as { protocol: number; libcryptsetup: string };
    assert.equal(hello.protocol, 1);
    assert.equal(hello.libcryptsetup, await s.sh("cryptsetup --version | cut -d' ' -f2"));
  });

  it('FORMAT writes a header with the token that cryptsetup reads back', async () => {
    dev = await s.loopDevice();
    const r = await s.one(Op.FORMAT, [[Tag.TYPE, 'luks2'], ...devFields(), [Tag.KEY, key], ...FAST, [Tag.LABEL, 'portcullis-test'], [Tag.TOKEN_JSON, TOKEN]], Status.OK);
    uuid = (json(r) as { uuid: string }).uuid;
    assert.match(uuid, /^[0-9a-f-]{36}$/);
    assert.equal(await s.sh(`cryptsetup luksUUID ${dev.path}`), uuid);
    assert.equal(JSON.parse(await s.sh(`cryptsetup token export --token-id 0 ${dev.path}`)).key_id, '0f1e2d3c');
  });

  it('HEADER reports type, uuid, label, the fast keyslot and the token', async () => {
    const h = json(await s.one(Op.HEADER, devFields(), Status.OK)) as {
      type: string; uuid: string; label: string; cipher: string; cipher_mode: string; key_bits: number;
      keyslots: Array<{ slot: number; state: string; pbkdf: string; iterations: number }>; tokens: Array<{ id: number; json: string }>;
    };
    assert.deepEqual([h.type, h.uuid, h.label, h.cipher, h.cipher_mode, h.key_bits], ['LUKS2', uuid, 'portcullis-test', 'aes', 'xts-plain64', 512]);
    assert.deepEqual(h.keyslots.map((k) => [k.slot, k.state, k.pbkdf, k.iterations]), [[0, 'active', 'pbkdf2', 1000]]);
    assert.equal(h.tokens.length, 1);
    assert.equal(JSON.parse((h.tokens[0] as { json: string }).json).type, 'portcullis');
  });

  it('OPEN maps it; STATUS reports the mapping; a second OPEN of the name is BUSY; KEY_TEST tells keys apart', async () => {
    const open = await s.one(Op.OPEN, [[Tag.TYPE, 'luks2'], ...devFields(), [Tag.NAME, name], [Tag.KEY, key]], Status.OK);
    assert.equal(slot(open), 0);
    const st = json(await s.one(Op.STATUS, [[Tag.NAME, name]], Status.OK)) as Record<string, unknown>;
    assert.equal(st.type, 'LUKS2');
    assert.equal(st.device_rdev, dev.rdev);
    assert.equal(st.device, dev.path);
    assert.equal(st.open_count, 0);
    assert.equal(st.suspended, false);
    assert.equal(st.cipher, 'aes-xts-plain64');
    assert.match(String(st.dm_uuid), new RegExp(`^CRYPT-LUKS2-${uuid.replace(/-/g, '')}-${name}$`));
    assert.equal(st.size_sectors, Number(await s.sh(`blockdev --getsz /dev/mapper/${name}`)));
    const b = await s.call([
      { op: Op.OPEN, fields: [[Tag.TYPE, 'luks2'], ...devFields(), [Tag.NAME, name], [Tag.KEY, key]] },
      { op: Op.KEY_TEST, fields: [...devFields(), [Tag.KEY, key]] },
      { op: Op.KEY_TEST, fields: [...devFields(), [Tag.KEY, other]] },
      { op: Op.LIST },
    ]);
    const [again, right, wrong, list] = [1, 2, 3, 4].map((id) => b.byId.get(id) as Response);
    assert.equal(again?.status, Status.BUSY, message(again as Response));
    assert.equal(right?.status, Status.OK);
    assert.equal(slot(right as Response), 0);
    assert.equal(wrong?.status, Status.WRONG_KEY);
    assert.ok((json(list as Response) as string[]).includes(name));
  });

  it('READ returns the bytes written through the mapping', async () => {
    const data = randomBytes(8192);
    await s.sh(`dd of=/dev/mapper/${name} bs=4096 seek=1 oflag=direct status=none`, data);
    const mapped = await s.rdev(`/dev/mapper/${name}`);
    const r = await s.one(Op.READ, [[Tag.PATH, `/dev/mapper/${name}`], [Tag.RDEV, mapped], [Tag.OFFSET, { u64: 4096n }], [Tag.LENGTH, { u64: 8192n }]], Status.OK);
    assert.ok(r.fields.get(Tag.DATA)?.equals(data), 'READ returns what dd wrote');
  });

  it('KEY_ADD, KEY_TEST of the new key, KEY_REMOVE; the last keyslot cannot be removed', async () => {
    const add = await s.one(Op.KEY_ADD, [...devFields(), [Tag.KEY, key], [Tag.NEW_KEY, other], ...FAST], Status.OK);
    assert.equal(slot(add), 1);
    assert.equal(slot(await s.one(Op.KEY_TEST, [...devFields(), [Tag.KEY, other]], Status.OK)), 1);
    await s.one(Op.KEY_REMOVE, [...devFields(), [Tag.SLOT, { i32: 1 }]], Status.OK);
    await s.one(Op.KEY_TEST, [...devFields(), [Tag.KEY, other]], Status.WRONG_KEY);
    const last = await s.one(Op.KEY_REMOVE, [...devFields(), [Tag.SLOT, { i32: 0 }]], Status.EINVAL);
    assert.match(message(last) ?? '', /last active/);
  });

  it('CLOSE removes the mapping; CLOSE and STATUS again answer NOT_FOUND', async () => {
    await s.one(Op.CLOSE, [[Tag.NAME, name]], Status.OK);
    assert.equal(await s.sh(`dmsetup info ${name} >/dev/null 2>&1 && echo present || echo gone`), 'gone');
    await s.one(Op.CLOSE, [[Tag.NAME, name]], Status.NOT_FOUND);
    await s.one(Op.STATUS, [[Tag.NAME, name]], Status.NOT_FOUND);
  });

  it('ERASE destroys every keyslot: KEY_TEST is WRONG_KEY after it', async () => {
    await s.one(Op.KEY_TEST, [...devFields(), [Tag.KEY, key]], Status.OK);
    await s.one(Op.ERASE, devFields(), Status.OK);
    await s.one(Op.KEY_TEST, [...devFields(), [Tag.KEY, key]], Status.WRONG_KEY);
    assert.deepEqual((json(await s.one(Op.HEADER, devFields(), Status.OK)) as { keyslots: unknown[] }).keyslots, []);
  });
});

describe('LUKS1, plain and RDEV through the helper', () => {
  const key = randomBytes(40);

  it('LUKS1: FORMAT, OPEN, STATUS, CLOSE', async () => {
    s.secret(key);
    const dev = await s.loopDevice();
    const f: Fields = [[Tag.PATH, dev.path], [Tag.RDEV, dev.rdev]];
    await s.one(Op.FORMAT, [[Tag.TYPE, 'luks1'], ...f, [Tag.KEY, key], ...FAST], Status.OK);
    assert.equal(await s.sh(`cryptsetup luksDump ${dev.path} | sed -n 's/^Version:[[:space:]]*//p'`), '1');
    await s.one(Op.OPEN, [[Tag.TYPE, 'luks1'], ...f, [Tag.NAME, 'ptc-l1'], [Tag.KEY, key]], Status.OK);
    assert.equal((json(await s.one(Op.STATUS, [[Tag.NAME, 'ptc-l1']], Status.OK)) as { type: string }).type, 'LUKS1');
    await s.one(Op.CLOSE, [[Tag.NAME, 'ptc-l1']], Status.OK);
  });

  const plainCases: Array<[string, Fields, string[]]> = [
    ['the defaults', [], []],
    ['aes-xts-plain64, 512 bits, an offset', [[Tag.CIPHER, 'aes-xts-plain64'], [Tag.KEY_BITS, { u32: 512 }], [Tag.OFFSET, { u64: 1048576n }]], ['--cipher', 'aes-xts-plain64', '--key-size', '512', '--offset', '2048']],
  ];
  for (const [what, extra, cli] of plainCases) {
    it(`plain OPEN maps exactly what cryptsetup create does (${what})`, async () => {
      const dev = await s.loopDevice(8);
      const table = async (m: string): Promise<string> => s.sh(`dmsetup table --showkeys ${m}`);
      await s.one(Op.OPEN, [[Tag.TYPE, 'plain'], [Tag.PATH, dev.path], [Tag.RDEV, dev.rdev], [Tag.NAME, 'ptc-p1'], [Tag.KEY, key], ...extra], Status.OK);
      const ours = await table('ptc-p1');
      await s.one(Op.CLOSE, [[Tag.NAME, 'ptc-p1']], Status.OK);
      await s.sh(`cryptsetup create --key-file=- ${cli.join(' ')} ptc-p2 ${dev.path}`, key);
      const theirs = await table('ptc-p2');
      await s.sh('cryptsetup close ptc-p2');
      // Tables hold the volume key: compare digests, show them redacted.
      const redact = (t: string): string => t.replace(/ [0-9a-f]{32,} /, ' <key> ');
      const digest = (t: string): string => createHash('sha256').update(t).digest('hex');
      assert.equal(digest(ours), digest(theirs), `helper: ${redact(ours)}\ncryptsetup: ${redact(theirs)}`);
    });
  }

  it('RDEV of another device: DEVICE_CHANGED and nothing changed (no header, no mapping)', async () => {
    const a = await s.loopDevice(8);
    const b = await s.loopDevice(8);
    const before = await s.sh(`head -c 4194304 ${b.path} | sha256sum`);
    const f = await s.one(Op.FORMAT, [[Tag.TYPE, 'luks2'], [Tag.PATH, b.path], [Tag.RDEV, a.rdev], [Tag.KEY, key], ...FAST], Status.DEVICE_CHANGED);
    assert.match(message(f) ?? '', new RegExp(`is now ${b.rdev}, not the requested ${a.rdev}`));
    await s.one(Op.OPEN, [[Tag.TYPE, 'plain'], [Tag.PATH, b.path], [Tag.RDEV, a.rdev], [Tag.NAME, 'ptc-rdev'], [Tag.KEY, key]], Status.DEVICE_CHANGED);
    assert.equal(await s.sh(`head -c 4194304 ${b.path} | sha256sum`), before);
    assert.equal(await s.sh('dmsetup info ptc-rdev >/dev/null 2>&1 && echo present || echo gone'), 'gone');
  });
});

describe('devices without libcryptsetup: SCAN_ZEROS, SYMLINK', () => {
  it('SCAN_ZEROS: null on a zeroed device, the offset of the first byte written', async () => {
    const dev = await s.loopDevice(4);
    const scan = (): Promise<Response> => s.one(Op.SCAN_ZEROS, [[Tag.PATH, dev.path], [Tag.RDEV, dev.rdev], [Tag.LENGTH, { u64: 4n << 20n }]], Status.OK);
    assert.deepEqual(json(await scan()), { scanned: 4 << 20, first_non_zero: null });
    await s.sh(`printf x | dd of=${dev.path} bs=1 seek=3000000 conv=notrunc status=none`);
    assert.deepEqual(json(await scan()), { scanned: 3 * 1048576, first_non_zero: 3000000 }, 'the scan stops at the 1 MiB chunk holding the byte');
  });

  it('SYMLINK places a link only under --symlink-dir, and replaces a link in place', async () => {
    const dev = await s.loopDevice(4);
    const dir = `${s.scratch}/links`;
    await s.sh(`mkdir -p ${dir}`);
    const args = ['--symlink-dir', dir];
    await s.one(Op.SYMLINK, [[Tag.LINK, `${dir}/vol`], [Tag.PATH, '/dev/null']], Status.EINVAL, args);
    await s.one(Op.SYMLINK, [[Tag.LINK, `${dir}/vol`], [Tag.PATH, '/dev/portcullis-none']], Status.NOT_FOUND, args);
    await s.one(Op.SYMLINK, [[Tag.LINK, `${dir}/vol`], [Tag.PATH, dev.path]], Status.OK, args);
    assert.equal(await s.sh(`readlink ${dir}/vol`), dev.path);
    const other = await s.loopDevice(4);
    await s.one(Op.SYMLINK, [[Tag.LINK, `${dir}/vol`], [Tag.PATH, other.path]], Status.OK, args);
    assert.equal(await s.sh(`readlink ${dir}/vol`), other.path);
    await s.one(Op.SYMLINK, [[Tag.LINK, `${s.scratch}/outside`], [Tag.PATH, dev.path]], Status.EINVAL, args);
    await s.one(Op.SYMLINK, [[Tag.LINK, `${dir}/vol`], [Tag.PATH, dev.path]], Status.EINVAL);
    await s.sh(`touch ${dir}/file`);
    await s.one(Op.SYMLINK, [[Tag.LINK, `${dir}/file`], [Tag.PATH, dev.path]], Status.EINVAL, args);
    assert.equal(await s.sh(`ls ${dir} | sort | tr '\\n' ' '`), 'file vol');
  });
});

describe('one thread per operation', () => {
  it('operations hung on a slow device hold only their threads; a suspended one is refused at once; past 64 the answer is TOO_MANY; all finish', async () => {
    const key = s.secret(randomBytes(32));
    const dev = await s.loopDevice(24);
    await s.one(Op.FORMAT, [[Tag.TYPE, 'luks2'], [Tag.PATH, dev.path], [Tag.RDEV, dev.rdev], [Tag.KEY, key], ...FAST], Status.OK);
    // Every read of ptc-hang waits 10 s (dm-delay: nothing in sysfs says so, as for a multipath device
    // queueing with no path); ptc-susp is suspended, which the helper refuses before any read.
    const hung = '/dev/mapper/ptc-hang';
    const suspended = '/dev/mapper/ptc-susp';
    const header = (id: number): Buffer => encodeRequest(Op.HEADER, id, [[Tag.PATH, hung]]);
    // Stages through a FIFO, each sent once the one before has settled (bounded waits; one
    // that runs out makes the assertions below fail): 63 HEADERs that hang (the main thread
    // + 63 in /proc/PID/task); a READ of the suspended device, then a HELLO, each answered while they hang (one at a
    // time: either would be the 64th); the 64th HEADER and one more, which is refused.
    const until = (cond: string): string => `i=0; while ! { ${cond}; } && [ $i -lt 600 ]; do i=$((i+1)); sleep 0.1; done`;
    const answered = (id: number): string => until(`grep -q '"id":${id},' $d/err`);
    const stages: Array<[Buffer, string]> = [
      [Buffer.concat(Array.from({ length: 63 }, (_, i) => header(i + 1))), until('[ $(ls /proc/$pid/task | wc -l) -ge 64 ]')],
      [encodeRequest(Op.READ, 101, [[Tag.PATH, suspended], [Tag.OFFSET, { u64: 0n }], [Tag.LENGTH, { u64: 512n }]]), answered(101)],
      [encodeRequest(Op.HELLO, 102), answered(102)],
      [Buffer.concat([header(64), header(100)]), answered(100)],
    ];
    let offset = 0;
    const feed = stages
      .map(([bytes, wait]) => {
        const line = `tail -c +${offset + 1} $d/all | head -c ${bytes.length} >&3\n${wait}`;
        offset += bytes.length;
        return line;
      })
      .join('\n');
    const script = `set -e
d=$(mktemp -d ${s.scratch}/hang.XXXXXX)
cat > $d/all
size=$(blockdev --getsz ${dev.path})
dmsetup create ptc-hang --table "0 $size delay ${dev.path} 0 10000"
dmsetup create ptc-susp --table "0 $size linear ${dev.path} 0"
dmsetup mknodes # no udev in the guest to make ${hung} and ${suspended}
dmsetup suspend ptc-susp
mkfifo $d/in
${HELPER_BINARIES.plain} --stdio < $d/in > $d/out 2> $d/err &
pid=$!
exec 3> $d/in
${feed}
exec 3>&-
status=0; wait $pid || status=$?
dmsetup resume ptc-susp
dmsetup remove ptc-susp
for i in $(seq 1 120); do dmsetup remove ptc-hang 2>/dev/null && break; sleep 1; done
cat $d/err >&2
[ $status = 0 ]
cat $d/out`;
    const r = await s.runner.run(['sh', '-c', script], { stdin: Buffer.concat(stages.map(([bytes]) => bytes)), timeoutMs: 300_000 });
    assert.equal(r.code, 0, r.stderr.toString());
    const order = decodeAll(r.stdout);
    assert.equal(order.length, 67);
    const early = order.slice(0, 3).map((x) => [x.id, x.status]);
    assert.deepEqual(early.slice(0, 2), [[101, Status.SUSPENDED], [102, Status.OK]], 'answered while 63 hang');
    assert.deepEqual(early[2], [100, Status.TOO_MANY], 'the 65th operation is refused');
    const rest = order.slice(3);
    assert.deepEqual(rest.map((x) => x.id).sort((p, q) => p - q), Array.from({ length: 64 }, (_, i) => i + 1));
    for (const x of rest) assert.equal((json(x) as { type: string }).type, 'LUKS2', `HEADER ${x.id} once its reads came back: ${message(x) ?? ''}`);
  });
});
