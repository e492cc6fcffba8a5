/**
 * barbican.metadata_file: a restarted daemon (a new stack over the same file)
 * asks a real Barbican, behind a real Keystone, only for the payload. The
 * fault proxy in front of Barbican counts the requests.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Attempt } from '../../../fixtures/fault-proxy.js';
import { rejectsWithCode } from '../../../helpers/errors.js';
import { bytesOf, faultStackForFile, toPayload, toSecret, type FaultStack } from './fault-stack.js';

let s: FaultStack;
let ctx: FaultStack['ctx'];
faultStackForFile((started) => ((s = started), (ctx = started.ctx)));

let dir: string;
before(() => (dir = mkdtempSync(join(tmpdir(), 'portcullis-barbican-meta-'))));
after(() => rmSync(dir, { recursive: true, force: true }));

/** The requests about secret `id` that reached Barbican from attempt `from` on. */
const requestsFor = (id: string, from: number): Attempt[] => s.proxy.attempts.slice(from).filter((a) => toSecret(id)(a) || toPayload(id)(a));
const kinds = (attempts: Attempt[], id: string) => attempts.map((a) => (toPayload(id)(a) ? 'payload' : 'metadata'));

/** Opens a stack (a daemon start) over `file`, runs `use`, closes it (a daemon stop); returns the requests made about `id`. */
async function run(file: string | undefined, id: string, use: (km: Awaited<ReturnType<FaultStack['openStack']>>) => Promise<void>): Promise<string[]> {
  const from = s.proxy.attempts.length;
  await s.usingStack(file === undefined ? {} : { barbican: { metadata_file: file } }, use);
  return kinds(requestsFor(id, from), id);
}

describe('barbican metadata_file', () => {
  it('get() costs 2 requests cold, 0 warm, and exactly 1 (the payload) after a restart, with the right bytes', async () => {
    const file = join(dir, 'restart.json');
    const id = await s.newKey();
    const want = await bytesOf(s.direct, ctx, id);
    const cold = await run(file, id, async (km) => {
      assert.deepEqual(await bytesOf(km, ctx, id), want);
      const before = s.proxy.attempts.length;
      assert.deepEqual(await bytesOf(km, ctx, id), want);
      assert.equal(requestsFor(id, before).length, 0, 'a warm cache asks Barbican nothing');
    });
    assert.deepEqual(cold, ['metadata', 'payload'], 'the first-ever fetch');
    const restarted = await run(file, id, async (km) => assert.deepEqual(await bytesOf(km, ctx, id), want));
    assert.deepEqual(restarted, ['payload'], 'after a restart: the payload alone');
    // Control: the same restart without the option costs what it always did.
    const without = await run(undefined, id, async (km) => assert.deepEqual(await bytesOf(km, ctx, id), want));
    assert.deepEqual(without, ['metadata', 'payload']);
  });

  it('the file is 0600 and holds the secret\'s metadata but never its bytes', async () => {
    const file = join(dir, 'hygiene.json');
    const id = await s.newKey();
    const key = await bytesOf(s.direct, ctx, id);
    await run(file, id, async (km) => void (await km.get(ctx, id)));
    assert.equal(statSync(file).mode & 0o777, 0o600);
    const text = readFileSync(file, 'utf8');
    const forms = [key.toString('hex'), key.toString('base64'), key.toString('base64url'), key.toString('base64').replace(/=+$/, '')];
    const leaks = (haystack: string) => forms.filter((f) => haystack.toLowerCase().includes(f.toLowerCase()));
    // Positive controls: the scan finds the key when it is there, and the file does speak of this secret.
    assert.equal(leaks(`${text}${key.toString('base64')}`).length > 0, true, 'the scan finds a key that is there');
    assert.equal(leaks(`x${key.toString('hex').toUpperCase()}x`).length > 0, true, 'the scan ignores case for hex');
    assert.ok(text.includes(id), 'the file holds an entry for the secret');
    assert.match(text, /"symmetric"/);
    assert.match(text, /,256\]/, 'its bit length');
    assert.deepEqual(leaks(text), [], 'no form of the key bytes is in the file');
  });

  it('a payload cut short is still refused against the stored bit length, and the next get asks for the metadata again', async () => {
    const file = join(dir, 'cut.json');
    const id = await s.newKey();
    await run(file, id, async (km) => void (await km.get(ctx, id)));
    const refused = await run(file, id, async (km) => {
      s.proxy.inject({ fault: { kind: 'cut', bytes: 16, framing: 'close' }, match: (m, p) => m === 'GET' && p === `/v1/secrets/${id}/payload` });
      const err = await rejectsWithCode(km.get(ctx, id), 'E_BACKEND_PROTOCOL');
      assert.match(err.message, /16 bytes for a 256-bit symmetric key/);
    });
    assert.deepEqual(refused, ['payload'], 'the length checked was the stored one: no metadata was asked for');
    const after = await run(file, id, async (km) => assert.equal((await km.get(ctx, id)).bytes().length, 32));
    assert.deepEqual(after, ['metadata', 'payload'], 'the refused entry was dropped');
  });

  it('a secret deleted while the daemon was down is E_KEY_NOT_FOUND after a restart, and its entry is dropped', async () => {
    const file = join(dir, 'deleted.json');
    const id = await s.newKey();
    await run(file, id, async (km) => void (await km.get(ctx, id)));
    assert.ok(readFileSync(file, 'utf8').includes(id));
    await s.direct.delete(ctx, id);
    const gone = await run(file, id, async (km) => void (await rejectsWithCode(km.get(ctx, id), 'E_KEY_NOT_FOUND')));
    assert.deepEqual(gone, ['payload']);
    assert.ok(!readFileSync(file, 'utf8').includes(id), 'the entry is gone from the file');
    const again = await run(file, id, async (km) => void (await rejectsWithCode(km.get(ctx, id), 'E_KEY_NOT_FOUND')));
    assert.deepEqual(again, ['metadata'], 'the next start asks for the metadata, as without the file');
  });

  it('a metadata-only get always asks Barbican, even when the file knows the secret', async () => {
    const file = join(dir, 'metadata-only.json');
    const id = await s.newKey();
    await run(file, id, async (km) => void (await km.get(ctx, id)));
    const asked = await run(file, id, async (km) => {
      const obj = await km.get(ctx, id, { metadataOnly: true });
      assert.equal(obj.bitLength, 256);
    });
    assert.deepEqual(asked, ['metadata']);
  });
});
