/**
 * Key rotation in the service core, over the named fake host (disk-host.ts)
 * and a real local keystore: which keyslots a rekey writes and in what
 * order, what the LUKS2 token and the record say afterwards, what a retry
 * after each step does, and every refusal leaving the header as it was. The
 * same on a real kernel, with the daemon killed between the steps:
 * rekey.vm.test.ts.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { rejectsWithCode } from '../../helpers/errors.js';
import { peer, serviceKit, type ServiceKit } from './service-kit.js';

const PROJECT = 'p-rekey';
const attachBody = (device: string, keyId: string, provider = 'luks2', more: Record<string, unknown> = {}) => ({
  device, key: { id: keyId }, project_id: PROJECT, provider, format: 'if-blank' as const, symlink: false, read_only: false, allow_discards: false, ...more,
});
const rekeyBody = (oldId: string, newId: string, more: Record<string, unknown> = {}) => ({ project_id: PROJECT, key: { id: oldId }, new_key: { id: newId }, ...more });
/** The header's writes and the mapping's changes among the commands run since `from`. */
const writesSince = (kit: ServiceKit, from: number) => kit.commands().slice(from).filter((c) => /luksAddKey|luksKillSlot|token import|luksFormat|luksErase|luksOpen|close/.test(c));

describe('rekey', () => {
  let kit: ServiceKit;
  const keys: Record<string, string> = {};
  /** os-brick's passphrase of a key: the hex of its bytes. */
  const hexOf = async (name: string) => Buffer.from((await kit.keys.get({ projectId: PROJECT }, keys[name] ?? '')).bytes()).toString('hex');
  const slotsOf = (path: string) => Object.fromEntries(kit.host.disks.get(path)?.slots ?? []);
  const tokenOf = (path: string) => Object.values(kit.host.disks.get(path)?.tokens ?? {}).find((t) => (t as { type?: string }).type === 'portcullis') as { slots: Record<string, { key_id: string; project_id: string; backend: string }> } | undefined;

  before(async () => {
    kit = await serviceKit({ devices: Object.fromEntries(['b', 'c', 'd', 'e', 'f', 'g', 'h', 'i'].map((l, i) => [`/dev/vd${l}`, { rdev: `253:${16 * (i + 1)}` }])) });
    for (const k of ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h']) keys[k] = await kit.keys.createKey({ projectId: PROJECT }, { algorithm: 'aes', length: 512 });
  });
  after(() => kit.close());

  it('LUKS2 online: adds the new slot, proves it, rewrites the token, destroys the old slot; the mapping stays open', async () => {
    const a = keys['a'] ?? '';
    const b = keys['b'] ?? '';
    await kit.volumes.attach('vol-2', attachBody('/dev/vdb', a), peer);
    assert.deepEqual(tokenOf('/dev/vdb')?.slots, { '0': { key_id: a, backend: 'local', project_id: PROJECT } }, 'the format wrote the token naming slot 0');
    const from = kit.commands().length;
    const answer = await kit.volumes.rekey('vol-2', rekeyBody(a, b), peer);
    assert.deepEqual([answer.online, answer.changed, answer.slot, answer.removed_slot, answer.luks_version, answer.recorded_in], [true, true, 1, 0, 2, ['token', 'record']]);
    const ran = kit.commands().slice(from).map((c) => /--test-passphrase|luksAddKey|token import|luksKillSlot|luksOpen|close/.exec(c)?.[0] ?? c);
    // cryptsetup's addKey asks which slot it made (a test of its own); the rekey then proves it.
    assert.deepEqual(ran, ['--test-passphrase', 'luksAddKey', '--test-passphrase', '--test-passphrase', 'token import', 'luksKillSlot'], 'test old, add, prove new, token, kill old; no close, no open');
    assert.deepEqual(slotsOf('/dev/vdb'), { 1: await hexOf('b') }, 'only the new key opens it, with os-brick\'s hex passphrase');
    assert.deepEqual(tokenOf('/dev/vdb')?.slots, { '1': { key_id: b, backend: 'local', project_id: PROJECT } });
    assert.ok(kit.host.mappings['vol-2'] !== undefined);
    assert.equal(kit.registry.get('vol-2')?.keyId, b);
    const shown = await kit.volumes.volume('vol-2');
    assert.deepEqual([shown.key_id, shown.keyslots_from, shown.keyslots], [b, 'token', [{ slot: 1, key_id: b, backend: 'local', project_id: PROJECT }]]);
  });

  it('an attach naming a key the token does not list is refused before any open is tried; the new key attaches', async () => {
    await kit.volumes.detach('vol-2', { deferred: false });
    const from = kit.commands().length;
    const refused = await rejectsWithCode(kit.volumes.attach('vol-2', attachBody('/dev/vdb', keys['a'] ?? ''), peer), 'E_VOLUME_KEY_MISMATCH');
    assert.match(refused.message, new RegExp(keys['b'] ?? 'x'));
    assert.deepEqual(writesSince(kit, from), [], 'no luksOpen was tried');
    assert.equal((await kit.volumes.attach('vol-2', attachBody('/dev/vdb', keys['b'] ?? ''), peer)).opened, true);
    await kit.volumes.detach('vol-2', { deferred: false });
  });

  it('LUKS1 online: same slots; no token, the record carries the facts and the view shows them', async () => {
    const [c, d] = [keys['c'] ?? '', keys['d'] ?? ''];
    await kit.volumes.attach('vol-1', attachBody('/dev/vdc', c, 'luks'), peer);
    const answer = await kit.volumes.rekey('vol-1', rekeyBody(c, d), peer);
    assert.deepEqual([answer.luks_version, answer.slot, answer.removed_slot, answer.recorded_in], [1, 1, 0, ['record']]);
    assert.deepEqual(slotsOf('/dev/vdc'), { 1: await hexOf('d') });
    assert.equal(kit.commands().filter((cmd) => cmd.includes('token import') && cmd.endsWith('/dev/vdc')).length, 0);
    const shown = await kit.volumes.volume('vol-1');
    assert.deepEqual([shown.keyslots_from, shown.keyslots], ['record', [{ slot: 1, key_id: d, backend: 'local', project_id: PROJECT }]]);
    await kit.volumes.detach('vol-1', { deferred: false });
  });

  it('offline with device: a detached LUKS2 volume; a retry of the finished rekey changes nothing', async () => {
    const [c, e] = [keys['c'] ?? '', keys['e'] ?? ''];
    await kit.volumes.attach('vol-off', attachBody('/dev/vdd', c), peer);
    await kit.volumes.detach('vol-off', { deferred: false });
    const answer = await kit.volumes.rekey('vol-off', rekeyBody(c, e, { device: '/dev/vdd' }), peer);
    assert.deepEqual([answer.online, answer.changed, answer.recorded_in], [false, true, ['token']]);
    assert.deepEqual(slotsOf('/dev/vdd'), { 1: await hexOf('e') });
    const from = kit.commands().length;
    const again = await kit.volumes.rekey('vol-off', rekeyBody(c, e, { device: '/dev/vdd' }), peer);
    assert.deepEqual([again.changed, again.slot, again.removed_slot], [false, 1, null]);
    assert.deepEqual(writesSince(kit, from), []);
  });

  it('a retry after each step does only what is left', async () => {
    const [f, g] = [keys['f'] ?? '', keys['g'] ?? ''];
    const disk = () => kit.host.disks.get('/dev/vde');
    const setState = async (slots: Record<number, string>, tokenKey: string, tokenSlot: number) => {
      const d = disk();
      assert.ok(d !== undefined);
      d.slots = new Map(Object.entries(slots).map(([s, p]) => [Number(s), p]));
      d.tokens = { '0': { type: 'portcullis', keyslots: [], version: 1, slots: { [String(tokenSlot)]: { key_id: tokenKey, backend: 'local', project_id: PROJECT } } } };
      kit.host.rebuild('/dev/vde');
    };
    await kit.volumes.attach('vol-retry', attachBody('/dev/vde', f), peer);
    await kit.volumes.detach('vol-retry', { deferred: false });
    const [hf, hg] = [await hexOf('f'), await hexOf('g')];
    const cases = [
      { step: 'slot added', state: () => setState({ 0: hf, 1: hg }, f, 0), writes: ['token import', 'luksKillSlot'] },
      { step: 'recorded', state: () => setState({ 0: hf, 1: hg }, g, 1), writes: ['luksKillSlot'] },
      { step: 'slot removed', state: () => setState({ 1: hg }, g, 1), writes: [] },
    ];
    for (const c of cases) {
      await c.state();
      const from = kit.commands().length;
      await kit.volumes.rekey('vol-retry', rekeyBody(f, g, { device: '/dev/vde' }), peer);
      assert.deepEqual(writesSince(kit, from).map((w) => (w.includes('token import') ? 'token import' : 'luksKillSlot')), c.writes, c.step);
      assert.deepEqual(slotsOf('/dev/vde'), { 1: hg }, c.step);
      assert.deepEqual(Object.keys(tokenOf('/dev/vde')?.slots ?? {}), ['1'], c.step);
    }
  });

  it('refusals change nothing: wrong current key, another project, a foreign mapping, plain, a key the token does not name, the same key', async () => {
    const [a, h] = [keys['a'] ?? '', keys['h'] ?? ''];
    await kit.volumes.attach('vol-ref', attachBody('/dev/vdf', h), peer);
    await kit.volumes.attach('vol-plain', attachBody('/dev/vdg', h, 'plain'), peer);
    kit.host.mappings['crypt-host'] = { uuid: 'CRYPT-LUKS2-x-crypt-host', slave: 'vdh', slaveRdev: '253:112' };
    const head = Buffer.from(kit.host.devices['/dev/vdf']?.head ?? Buffer.alloc(0));
    const other = await kit.keys.createKey({ projectId: PROJECT }, { algorithm: 'aes', length: 512 });
    await kit.volumes.attach('vol-ref1', attachBody('/dev/vdi', h, 'luks'), peer);
    await kit.volumes.detach('vol-ref1', { deferred: false });
    const head1 = Buffer.from(kit.host.devices['/dev/vdi']?.head ?? Buffer.alloc(0));
    const from = kit.commands().length;
    // Offline LUKS1 (no token, no record): only the keys themselves can tell, and neither opens.
    await rejectsWithCode(kit.volumes.rekey('vol-ref1', rekeyBody(other, a, { device: '/dev/vdi' }), peer), 'E_WRONG_KEY');
    // The token names h: a current key it does not name is refused before any PBKDF run.
    await rejectsWithCode(kit.volumes.rekey('vol-ref', rekeyBody(a, other), peer), 'E_VOLUME_KEY_MISMATCH');
    await rejectsWithCode(kit.volumes.rekey('vol-ref', { ...rekeyBody(h, a), project_id: 'p-other' }, peer), 'E_MAPPING_CONFLICT');
    await rejectsWithCode(kit.volumes.rekey('crypt-host', rekeyBody(h, a), peer), 'E_MAPPING_FOREIGN');
    await rejectsWithCode(kit.volumes.rekey('vol-plain', rekeyBody(h, a), peer), 'E_REKEY_UNSUPPORTED');
    await rejectsWithCode(kit.volumes.rekey('vol-ref', rekeyBody(h, h), peer), 'E_BAD_REQUEST');
    await rejectsWithCode(kit.volumes.rekey('vol-ref', rekeyBody(h, '5f0e2c8a-0000-4000-8000-000000000000'), peer), 'E_KEY_NOT_FOUND');
    await rejectsWithCode(kit.volumes.rekey('vol-gone', rekeyBody(h, a), peer), 'E_VOLUME_NOT_FOUND');
    assert.deepEqual(writesSince(kit, from), []);
    assert.ok(kit.host.devices['/dev/vdf']?.head?.equals(head), 'the header is byte for byte as it was');
    assert.ok(kit.host.devices['/dev/vdi']?.head?.equals(head1));
    assert.equal(kit.registry.get('vol-ref')?.keyId, h);
  });

  it('every rekey is audited and counted', async () => {
    const audits = kit.logs.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l['message'] === 'key_rekey' && l['audit'] === true);
    assert.ok(audits.some((l) => l['outcome'] === 'ok' && l['name'] === 'vol-2' && l['new_key_id'] === keys['b']), JSON.stringify(audits.slice(0, 2)));
    assert.ok(audits.some((l) => l['outcome'] === 'E_WRONG_KEY'));
    const text = await kit.metricsText();
    assert.match(text, /portcullis_operations_total\{operation="rekey",outcome="ok"\} [1-9]/);
    assert.match(text, /portcullis_operations_total\{operation="rekey",outcome="E_MAPPING_FOREIGN"\} 1/);
  });
});
