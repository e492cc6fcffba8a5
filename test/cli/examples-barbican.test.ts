/**
 * The shipped Barbican example configs work exactly as shipped: a real
 * Barbican on 127.0.0.1:9311 (noauth) and a real Keystone on 127.0.0.1:5000
 * whose catalog points at a real Barbican behind the Keystone pipeline.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { startBarbican, type BarbicanServer } from '../fixtures/barbican-server.js';
import { startKeystone, type KeystoneServer } from '../fixtures/keystone-server.js';
import { repoRoot } from '../helpers/paths.js';

const cli = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

function portcullis(example: string, args: string[], input?: string) {
  const result = spawnSync(process.execPath, [cli, ...args, '--config', join(repoRoot, 'examples', example)], {
    input,
    env: { ...process.env, OS_AUTH_TOKEN: '' },
    timeout: 60_000,
  });
  return { status: result.status, text: result.stdout.toString(), stderr: result.stderr.toString() };
}

function ok(example: string, args: string[], input?: string): string {
  const run = portcullis(example, args, input);
  assert.equal(run.status, 0, `portcullis ${args.join(' ')} failed: ${run.stderr}`);
  return run.text;
}

describe('examples/barbican-noauth.yaml', () => {
  let barbican: BarbicanServer;
  before(async () => {
    barbican = await startBarbican({ pipeline: 'noauth', port: 9311 });
  });
  after(async () => barbican?.stop());

  it('creates, reads, lists and deletes a key in the --project given', () => {
    const id = ok('barbican-noauth.yaml', ['key', 'create', '--project', 'tenant-1', '--name', 'example']).trim();
    assert.match(ok('barbican-noauth.yaml', ['key', 'get', id, '--project', 'tenant-1']).trim(), /^[0-9a-f]{64}$/);
    assert.ok(ok('barbican-noauth.yaml', ['key', 'list', '--project', 'tenant-1', '--name', 'example']).includes(id));
    const other = portcullis('barbican-noauth.yaml', ['key', 'get', id, '--project', 'tenant-2']);
    assert.equal(other.status, 1);
    assert.match(other.stderr, /E_KEY_FORBIDDEN|E_KEY_NOT_FOUND/);
    ok('barbican-noauth.yaml', ['key', 'delete', id, '--project', 'tenant-1']);
  });
});

describe('examples/barbican-keystone.yaml', () => {
  let keystone: KeystoneServer;
  let barbican: BarbicanServer;
  before(async () => {
    keystone = await startKeystone({ port: 5000 });
    barbican = await startBarbican({ pipeline: 'keystone', keystone });
    await keystone.registerKeyManager(barbican.url);
  });
  after(async () => {
    await barbican?.stop();
    await keystone?.stop();
  });

  it('authenticates with the shipped password, finds Barbican in the catalog, and keeps projects apart', () => {
    const a = keystone.projects.a.id;
    const b = keystone.projects.b.id;
    const id = ok('barbican-keystone.yaml', ['key', 'store', '--type', 'passphrase', '--project', a], 'example passphrase').trim();
    assert.equal(ok('barbican-keystone.yaml', ['key', 'get', id, '--project', a, '--output', 'raw']), 'example passphrase');
    const other = portcullis('barbican-keystone.yaml', ['key', 'get', id, '--project', b]);
    assert.equal(other.status, 1);
    assert.match(other.stderr, /E_KEY_FORBIDDEN|E_KEY_NOT_FOUND/);
  });
});
