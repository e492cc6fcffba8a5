import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { rolesOf } from '../../src/daemon/api/peer.js';
import { rolesOptionsSchema } from '../../src/config/daemon-options.js';

const roles = rolesOptionsSchema.parse({ agent: { uids: [1001], gids: [64060] }, admin: { uids: [1002], gids: [27] } });
const peer = (uid: number, gid: number, groups: number[] = []) => ({ pid: 1, uid, gid, groups });

describe('rolesOf()', () => {
  it('root is always admin and agent, even with no roles configured', () => {
    assert.deepEqual([...rolesOf(peer(0, 0), rolesOptionsSchema.parse({}))].sort(), ['admin', 'agent']);
  });
  it('grants agent by uid, by primary gid and by a supplementary group', () => {
    assert.deepEqual([...rolesOf(peer(1001, 100), roles)], ['agent']);
    assert.deepEqual([...rolesOf(peer(5000, 64060), roles)], ['agent']);
    assert.deepEqual([...rolesOf(peer(5000, 100, [4, 64060]), roles)], ['agent']);
  });
  it('an admin may do what an agent may', () => {
    assert.deepEqual([...rolesOf(peer(1002, 100), roles)].sort(), ['admin', 'agent']);
    assert.deepEqual([...rolesOf(peer(5000, 100, [27]), roles)].sort(), ['admin', 'agent']);
  });
  it('anyone else holds no role', () => {
    assert.equal(rolesOf(peer(65534, 65534, [65534]), roles).size, 0);
  });
});
