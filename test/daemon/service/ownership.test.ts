/**
 * Ownership's pure decisions (src/daemon/service/ownership.ts): which
 * mappings are portcullis' own, and when an attach over one is the same
 * request. The whole attach over the named fake host: volumes.test.ts.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { assertSameAttach, attachDifferences, ownRecord, type AttachWish } from '../../../src/daemon/service/ownership.js';
import type { MappingStatus } from '../../../src/luks/driver.js';
import type { VolumeRecord } from '../../../src/daemon/volume-registry.js';
import { throwsWithCode } from '../../helpers/errors.js';

const record: VolumeRecord = { origin: 'attached', device: '/dev/vdb', rdev: '253:16', projectId: 'p1', keyId: 'k1' };
const status: MappingStatus = { name: 'v', mapperPath: '/dev/mapper/v', type: 'LUKS2', readOnly: false, inUse: false, flags: [], device: '/dev/vdb', deviceRdev: '253:16' };
const wish: AttachWish = { device: { path: '/dev/vdb', rdev: '253:16' }, projectId: 'p1', keyId: 'k1', provider: 'luks2', readOnly: false };

describe('attachDifferences()', () => {
  it('is empty for the same request, and for luks (luksOpen opens either version) over a LUKS2 mapping', () => {
    assert.deepEqual(attachDifferences(record, status, wish), []);
    assert.deepEqual(attachDifferences(record, status, { ...wish, provider: 'luks' }), []);
    assert.deepEqual(attachDifferences(record, { ...status, type: 'LUKS1' }, { ...wish, provider: 'luks' }), []);
  });

  it('names every field that differs: device, project, key, provider, mode', () => {
    const other: AttachWish = { device: { path: '/dev/vdc', rdev: '253:32' }, projectId: 'p2', keyId: 'k2', provider: 'plain', readOnly: true };
    assert.deepEqual(attachDifferences(record, status, other), ['device', 'project_id', 'key_id', 'provider', 'read_only']);
    assert.deepEqual(attachDifferences(record, { ...status, type: 'LUKS1' }, wish), ['provider'], 'luks2 does not open a LUKS1 mapping as the same request');
  });

  it('does not compare what an old record never had (its owners): the caller proves the key against the header instead', () => {
    assert.deepEqual(attachDifferences({ ...record, projectId: null, keyId: null }, status, { ...wish, projectId: 'p9', keyId: 'k9' }), []);
  });

  it('assertSameAttach() refuses with E_MAPPING_CONFLICT naming what differs', () => {
    const err = throwsWithCode(() => assertSameAttach('v', record, status, { ...wish, keyId: 'k2' }), 'E_MAPPING_CONFLICT');
    assert.deepEqual((err as unknown as { details: { differs: string[] } }).details.differs, ['key_id']);
  });
});

describe('ownRecord()', () => {
  it('a mapping with no record, or only a detached ephemeral disk\'s, is foreign', () => {
    throwsWithCode(() => ownRecord('v', undefined, 'detach'), 'E_MAPPING_FOREIGN');
    throwsWithCode(() => ownRecord('v', { ...record, keyScope: 'instance', detached: true }, 'detach'), 'E_MAPPING_FOREIGN');
    assert.equal(ownRecord('v', record, 'detach'), record);
  });
});
