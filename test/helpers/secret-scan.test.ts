/**
 * findSecrets() must find each form it claims to, or a hygiene test that
 * uses it passes for the wrong reason.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { describeSecrets, findSecrets } from './secret-scan.js';

// Chosen so that its base64 holds both '+' and '/', which base64url spells '-' and '_'.
const key = Buffer.from('fbff3e0102030405060708090a0b0c0dfbefbe', 'hex');
const other = Buffer.from('00112233445566778899aabbccddeeff', 'hex');

describe('findSecrets()', () => {
  it('finds a key raw, as lower and upper hex, base64 and base64url, each at its offset', () => {
    const b64 = key.toString('base64');
    assert.match(b64, /[+/]/, 'the fixture key exercises the base64 alphabet difference');
    const forms = {
      raw: Buffer.concat([Buffer.from('xx'), key, Buffer.from('yy')]),
      hex: `log: ${key.toString('hex')} end`,
      HEX: `log: ${key.toString('hex').toUpperCase()} end`,
      base64: `{"payload":"${b64}"}`,
      base64url: `k=${key.toString('base64url')}`,
    } as const;
    for (const [form, hay] of Object.entries(forms)) {
      const found = findSecrets([key], [hay]);
      assert.deepEqual(found.map((o) => o.form), [form], `${form}: ${JSON.stringify(found)}`);
    }
    assert.equal(findSecrets([key], [forms.raw])[0]?.offset, 2);
    assert.equal(findSecrets([key], [forms.hex])[0]?.offset, 5);
  });

  it('finds unpadded base64 inside a longer encoded run, and every occurrence, in every haystack, for every key', () => {
    const run = `${key.toString('base64').replace(/=+$/, '')}QUJD`;
    const found = findSecrets([other, key], [Buffer.from('nothing here'), run, `${other.toString('hex')} and ${other.toString('hex')}`]);
    assert.deepEqual(
      found.map((o) => [o.key, o.haystack, o.form, o.offset]),
      [
        [0, 2, 'hex', 0],
        [0, 2, 'hex', 37],
        [1, 1, 'base64', 0],
      ],
    );
  });

  it('reports a spot where base64 and base64url agree once, and finds nothing in clean text', () => {
    const plain = Buffer.from('0102030405060708090a0b0c', 'hex'); // base64 without + or /
    assert.equal(findSecrets([plain], [plain.toString('base64')]).length, 1);
    assert.deepEqual(findSecrets([key, other], ['{"status":"ok","key_id":"0f1e"}', Buffer.alloc(64)]), []);
  });

  it('refuses keys too short to find without false alarms, and describes hits without the key', () => {
    assert.throws(() => findSecrets([Buffer.from('abc')], ['abc']), /at least 8/);
    const hays = [{ name: 'daemon log', data: key.toString('hex') }];
    const text = describeSecrets(findSecrets([key], hays), hays);
    assert.equal(text, 'key 0 as hex in daemon log at byte 0');
  });
});
