import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FIXED_KEY_ID, fixedBackend } from '../../../src/keyclient/backends/fixed.js';
import { plainAllocator } from '../../../src/util/secure-memory.js';
import { rejectsWithCode } from '../../helpers/errors.js';
import { keyManagerContract } from '../contract.js';

const key = 'ab'.repeat(32);

keyManagerContract({
  name: 'fixed',
  open: () => fixedBackend.create(fixedBackend.optionsSchema.parse({ key, allow_insecure: true }), { allocator: plainAllocator() }),
  projectA: () => ({ projectId: 'project-a' }),
  projectB: () => ({ projectId: 'project-b' }),
  fixedKeyId: FIXED_KEY_ID,
});

describe('fixed backend options', () => {
  it('refuse to validate without allow_insecure: true, naming the key to set', () => {
    const result = fixedBackend.optionsSchema.safeParse({ key });
    assert.equal(result.success, false);
    assert.ok(result.error?.issues.some((i) => i.path.join('.') === 'allow_insecure' && /allow_insecure: true/.test(i.message)));
  });

  it('reject a key that is not 128 to 512 bits of hex', () => {
    for (const bad of ['abc', 'zz'.repeat(32), 'ab'.repeat(8), 'ab'.repeat(65)]) {
      const result = fixedBackend.optionsSchema.safeParse({ key: bad, allow_insecure: true });
      assert.equal(result.success, false, bad);
    }
  });

  it('create() refuses E_BACKEND_INSECURE when given unvalidated options without allow_insecure', async () => {
    await rejectsWithCode(
      fixedBackend.create({ key, key_id: FIXED_KEY_ID, allow_insecure: false }, { allocator: plainAllocator() }),
      'E_BACKEND_INSECURE',
    );
  });

  it('health() says insecure', async () => {
    const km = await fixedBackend.create(fixedBackend.optionsSchema.parse({ key, allow_insecure: true }), { allocator: plainAllocator() });
    assert.equal((await km.health()).insecure, true);
    await km.close();
  });
});
