/**
 * Ephemeral disks in the service core, over the named fake host and a real
 * local keystore (service-kit.ts): which key a disk is opened with, what its
 * record and header token say about that key, and how names are made.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { ephemeralKeyName, ephemeralMappingName } from '../../../src/daemon/service/ephemeral.js';
import { rejectsWithCode } from '../../helpers/errors.js';
import { peer, serviceKit, type ServiceKit } from './service-kit.js';

const ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

describe('ephemeralMappingName()', () => {
  it('is injective: instance a-b disk c and instance a disk b-c are two mappings', () => {
    assert.notEqual(ephemeralMappingName('a-b', 'c'), ephemeralMappingName('a', 'b-c'));
  });

  it('is injective and within dm\'s 127 bytes for any two ids the API accepts', () => {
    const id = fc.stringMatching(ID);
    fc.assert(
      fc.property(id, id, id, id, (i1, d1, i2, d2) => {
        const [n1, n2] = [ephemeralMappingName(i1, d1), ephemeralMappingName(i2, d2)];
        assert.ok(n1.length <= 127 && n2.length <= 127);
        assert.equal(n1 === n2, i1 === i2 && d1 === d2);
      }),
      { numRuns: 2000 },
    );
    const long = 'x'.repeat(63);
    assert.notEqual(ephemeralMappingName(long, `${long.slice(1)}y`), ephemeralMappingName(long, `${long.slice(1)}z`));
  });
});

describe('ephemeral attach', () => {
  let kit: ServiceKit;
  before(async () => (kit = await serviceKit()));
  after(() => kit.close());

  it('a provider name that is an Object.prototype property ("__proto__", "constructor") is refused before any key exists', async () => {
    for (const provider of ['__proto__', 'constructor', 'toString', 'hasOwnProperty']) {
      await rejectsWithCode(kit.ephemeral.attach('proto', 'd0', { device: '/dev/vdb', key_scope: 'instance', project_id: 'p-proto', provider, read_only: false, allow_discards: false }, peer), 'E_LUKS_INVALID_ARGUMENT');
    }
    assert.deepEqual(await kit.keys.list({ projectId: 'p-proto' }, {}), [], 'no stray key');
    assert.deepEqual(kit.commands(), []);
  });

  it('plain and LUKS1 are refused: an ephemeral disk is LUKS2, whose header token proves it before an erase', async () => {
    for (const provider of ['plain', 'luks']) {
      await rejectsWithCode(kit.ephemeral.attach('i-plain', 'd0', { device: '/dev/vdb', key_scope: 'instance', project_id: 'p-plain', provider, read_only: false, allow_discards: false }, peer), 'E_BAD_REQUEST');
    }
    assert.deepEqual(kit.commands(), []);
  });

  it('the first attach formats with a token naming disk, project and key; the scope a key was created with never changes', async () => {
    const name = ephemeralMappingName('i-scope', 'd0');
    const first = await kit.ephemeral.attach('i-scope', 'd0', { device: '/dev/vdb', key_scope: 'project', project_id: 'p-scope', provider: 'luks2', read_only: false, allow_discards: false }, peer);
    assert.deepEqual([first.formatted, first.key_source, first.key_scope], [true, 'created', 'project']);
    const imported = kit.host.calls.find((c) => c.argv.join(' ').startsWith('cryptsetup token import'));
    assert.deepEqual(JSON.parse(imported?.stdin?.toString() ?? '{}'), { type: 'portcullis-disk', keyslots: [], version: 1, name, project_id: 'p-scope', key_id: first.key_id, key_scope: 'project', key_created: true });
    await kit.ephemeral.detach('i-scope', 'd0', false, undefined, peer);
    // The agent reattaches naming the key and no scope (the default, instance).
    const again = await kit.ephemeral.attach('i-scope', 'd0', { device: '/dev/vdb', key_scope: 'instance', key: { id: first.key_id ?? '' }, project_id: 'p-scope', provider: 'luks2', read_only: false, allow_discards: false }, peer);
    assert.equal(again.key_scope, 'project');
    assert.deepEqual([kit.registry.get(name)?.keyScope, kit.registry.get(name)?.keyCreated], ['project', true]);
    const erased = await kit.ephemeral.detach('i-scope', 'd0', true, { project_id: 'p-scope' }, peer);
    assert.deepEqual([erased.keyslots_wiped, erased.key_deleted], [true, false], 'the shared project key is never deleted');
    assert.equal((await kit.keys.get({ projectId: 'p-scope' }, first.key_id ?? '')).id, first.key_id);
  });

  it('a reattach opens with the recorded key, even when another key now has the disk\'s name', async () => {
    const first = await kit.ephemeral.attach('i-rec', 'd0', { device: '/dev/vdc', key_scope: 'instance', project_id: 'p-rec', provider: 'luks2', read_only: false, allow_discards: false }, peer);
    await kit.ephemeral.detach('i-rec', 'd0', false, undefined, peer);
    // An order that completed after the agent's retry made another, older-looking one.
    await kit.keys.createKey({ projectId: 'p-rec' }, { algorithm: 'aes', length: 512, name: ephemeralKeyName('instance', 'p-rec', 'i-rec', 'd0') });
    const again = await kit.ephemeral.attach('i-rec', 'd0', { device: '/dev/vdc', key_scope: 'instance', project_id: 'p-rec', provider: 'luks2', read_only: false, allow_discards: false }, peer);
    assert.deepEqual([again.opened, again.key_id], [true, first.key_id]);
    // Even with the record gone (a lost file): the header token names the key.
    await kit.ephemeral.detach('i-rec', 'd0', false, undefined, peer);
    kit.registry.delete(ephemeralMappingName('i-rec', 'd0'));
    const fromToken = await kit.ephemeral.attach('i-rec', 'd0', { device: '/dev/vdc', key_scope: 'instance', project_id: 'p-rec', provider: 'luks2', read_only: false, allow_discards: false }, peer);
    assert.deepEqual([fromToken.opened, fromToken.key_id], [true, first.key_id]);
    await kit.ephemeral.detach('i-rec', 'd0', true, { project_id: 'p-rec' }, peer);
  });

  it('a name lookup that finds several keys is a clear refusal, never a guess; nothing is created or formatted', async () => {
    const keyName = ephemeralKeyName('instance', 'p-amb', 'i-amb', 'd0');
    await kit.keys.createKey({ projectId: 'p-amb' }, { algorithm: 'aes', length: 512, name: keyName });
    await kit.keys.createKey({ projectId: 'p-amb' }, { algorithm: 'aes', length: 512, name: keyName });
    const before = kit.commands().length;
    await rejectsWithCode(kit.ephemeral.attach('i-amb', 'd0', { device: '/dev/vdb', key_scope: 'instance', project_id: 'p-amb', provider: 'luks2', read_only: false, allow_discards: false }, peer), 'E_KEY_AMBIGUOUS');
    assert.deepEqual(kit.commands().slice(before), []);
    assert.equal((await kit.keys.list({ projectId: 'p-amb' }, { name: keyName })).length, 2);
  });
});
