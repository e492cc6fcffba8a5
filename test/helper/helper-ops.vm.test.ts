/**
 * The rest of portcullis-helper's operations on a real kernel's dm-crypt
 * (helper.vm.test.ts has the life cycle): KEY_CHANGE, TOKEN_SET, RESIZE,
 * TARGETS, REMOVE_EMPTY. cryptsetup and dmsetup on the same kernel are the oracle.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { Op, Status, Tag, json, message, slot, type Fields } from './codec.js';
import { HelperSession } from './vm-session.js';

let s: HelperSession;
before(async () => {
  s = await HelperSession.start();
});
after(() => s?.cleanup());

const FAST: Fields = [[Tag.PBKDF, 'pbkdf2'], [Tag.ITERATIONS, { u32: 1000 }]];

describe('keyslots and tokens', () => {
  it('KEY_CHANGE rewrites the slot KEY opens, in place; TOKEN_SET adds a token', async () => {
    const [key, fresh] = [s.secret(randomBytes(32)), s.secret(randomBytes(32))];
    const dev = await s.loopDevice();
    const f: Fields = [[Tag.PATH, dev.path], [Tag.RDEV, dev.rdev]];
    await s.one(Op.FORMAT, [[Tag.TYPE, 'luks2'], ...f, [Tag.KEY, key], ...FAST], Status.OK);
    assert.equal(slot(await s.one(Op.KEY_CHANGE, [...f, [Tag.KEY, key], [Tag.NEW_KEY, fresh], ...FAST], Status.OK)), 0);
    await s.one(Op.KEY_TEST, [...f, [Tag.KEY, key]], Status.WRONG_KEY);
    assert.equal(slot(await s.one(Op.KEY_TEST, [...f, [Tag.KEY, fresh]], Status.OK)), 0);
    await s.one(Op.KEY_CHANGE, [...f, [Tag.KEY, key], [Tag.NEW_KEY, fresh]], Status.WRONG_KEY);
    const id = slot(await s.one(Op.TOKEN_SET, [...f, [Tag.TOKEN_JSON, '{"type":"portcullis-test","keyslots":["0"]}']], Status.OK));
    assert.equal(id, 0);
    assert.equal(JSON.parse(await s.sh(`cryptsetup token export --token-id 0 ${dev.path}`)).type, 'portcullis-test');
    const bad = await s.one(Op.TOKEN_SET, [...f, [Tag.TOKEN_JSON, '{"keyslots":[]}']], Status.EINVAL);
    assert.ok((message(bad) ?? '').length > 0);
  });
});

describe('mappings', () => {
  it('RESIZE follows a grown device (KEY reloads a volume key kept in the keyring) and takes LENGTH', async () => {
    const key = s.secret(randomBytes(32));
    const dev = await s.loopDevice(24);
    await s.one(Op.FORMAT, [[Tag.TYPE, 'luks2'], [Tag.PATH, dev.path], [Tag.RDEV, dev.rdev], [Tag.KEY, key], ...FAST], Status.OK);
    await s.one(Op.OPEN, [[Tag.TYPE, 'luks2'], [Tag.PATH, dev.path], [Tag.RDEV, dev.rdev], [Tag.NAME, 'ptc-rs'], [Tag.KEY, key]], Status.OK);
    const size = async (): Promise<number> => (json(await s.one(Op.STATUS, [[Tag.NAME, 'ptc-rs']], Status.OK)) as { size_sectors: number }).size_sectors;
    const before = await size();
    await s.sh(`truncate -s 32M ${dev.file} && losetup -c ${dev.path}`);
    await s.one(Op.RESIZE, [[Tag.NAME, 'ptc-rs'], [Tag.KEY, key]], Status.OK);
    assert.equal(await size(), before + 16384, 'grown by the 8 MiB added to the device');
    await s.one(Op.RESIZE, [[Tag.NAME, 'ptc-rs'], [Tag.KEY, key], [Tag.LENGTH, { u64: 4n << 20n }]], Status.OK);
    assert.equal(await size(), 8192);
    assert.equal(Number(await s.sh('blockdev --getsz /dev/mapper/ptc-rs || dmsetup table ptc-rs | cut -d" " -f2')), 8192);
    await s.one(Op.RESIZE, [[Tag.NAME, 'ptc-none'], [Tag.KEY, key]], Status.NOT_FOUND);
    await s.one(Op.CLOSE, [[Tag.NAME, 'ptc-rs']], Status.OK);
  });

  it('TARGETS reports the crypt target version dmsetup reports', async () => {
    const t = json(await s.one(Op.TARGETS, [], Status.OK)) as { crypt: number[] };
    assert.equal(`v${t.crypt.join('.')}`, await s.sh("dmsetup targets | awk '$1 == \"crypt\" { print $2 }'"));
  });

  it('REMOVE_EMPTY removes a table-less CRYPT- mapping, and refuses any other', async () => {
    await s.sh('dmsetup create ptc-empty --notable --uuid CRYPT-PLAIN-ptc-empty && dmsetup create ptc-foreign --notable --uuid LVM-ptc-foreign');
    await s.one(Op.REMOVE_EMPTY, [[Tag.NAME, 'ptc-empty']], Status.OK);
    assert.equal(await s.sh('dmsetup info ptc-empty >/dev/null 2>&1 && echo present || echo gone'), 'gone');
    assert.match(message(await s.one(Op.REMOVE_EMPTY, [[Tag.NAME, 'ptc-foreign']], Status.EINVAL)) ?? '', /does not start CRYPT-/);
    await s.sh('dmsetup remove ptc-foreign');
    const key = s.secret(randomBytes(32));
    const dev = await s.loopDevice(8);
    await s.one(Op.OPEN, [[Tag.TYPE, 'plain'], [Tag.PATH, dev.path], [Tag.RDEV, dev.rdev], [Tag.NAME, 'ptc-full'], [Tag.KEY, key]], Status.OK);
    assert.match(message(await s.one(Op.REMOVE_EMPTY, [[Tag.NAME, 'ptc-full']], Status.EINVAL)) ?? '', /has a table/);
    await s.one(Op.REMOVE_EMPTY, [[Tag.NAME, 'ptc-empty']], Status.NOT_FOUND);
    await s.one(Op.CLOSE, [[Tag.NAME, 'ptc-full']], Status.OK);
  });
});
