import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, it } from 'node:test';
import { FIXED_KEY_ID } from '../../src/keyclient/backends/fixed.js';
import { repoRoot } from '../helpers/paths.js';

const cli = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'portcullis-cli-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const fixedKey = '5a'.repeat(32);
const config = join(dir, 'portcullis.yaml');
writeFileSync(
  config,
  [
    'key_manager:',
    '  backend: local',
    '  local:',
    `    path: ${join(dir, 'keystore.db')}`,
    `    kek_file: ${join(dir, 'kek')}`,
    '  fixed:',
    `    key: ${fixedKey}`,
    '    allow_insecure: true',
  ].join('\n'),
);

interface Run {
  status: number | null;
  stdout: Buffer;
  stderr: string;
  text: string;
}

function portcullis(args: string[], input?: Buffer | string, env: NodeJS.ProcessEnv = {}): Run {
  const result = spawnSync(process.execPath, [cli, ...args], {
    input,
    env: { ...process.env, PORTCULLIS_CONFIG: config, ...env },
    timeout: 60_000,
  });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr.toString(), text: result.stdout.toString() };
}

function ok(args: string[], input?: Buffer | string): Run {
  const run = portcullis(args, input);
  assert.equal(run.status, 0, `portcullis ${args.join(' ')} failed: ${run.stderr}`);
  return run;
}

describe('portcullis key (local keystore)', () => {
  it('create prints an id whose key get shows as 64 hex digits, raw as 32 bytes, json with metadata', () => {
    const id = ok(['key', 'create', '--project', 'p1', '--name', 'vol-key']).text.trim();
    assert.match(id, /^[0-9a-f-]{36}$/);
    const hex = ok(['key', 'get', id, '--project', 'p1']).text.trim();
    assert.match(hex, /^[0-9a-f]{64}$/);
    const raw = ok(['key', 'get', id, '--project', 'p1', '--output', 'raw']).stdout;
    assert.equal(raw.toString('hex'), hex);
    const json = JSON.parse(ok(['key', 'get', id, '--project', 'p1', '--output', 'json']).text) as Record<string, unknown>;
    assert.deepEqual(
      { id: json['id'], type: json['type'], name: json['name'], algorithm: json['algorithm'], bits: json['bit_length'] },
      { id, type: 'symmetric', name: 'vol-key', algorithm: 'aes', bits: 256 },
    );
    assert.equal(Buffer.from(String(json['payload_base64']), 'base64').toString('hex'), hex);
  });

  it('create --length 512 makes an AES-256-XTS sized key', () => {
    const id = ok(['key', 'create', '--project', 'p1', '--length', '512']).text.trim();
    assert.equal(ok(['key', 'get', id, '--project', 'p1', '--output', 'raw']).stdout.length, 64);
  });

  it('store reads binary bytes from standard input and get returns them unchanged', () => {
    const bytes = Buffer.from([0, 1, 2, 255, 10, 13, 0, 128]);
    const id = ok(['key', 'store', '--type', 'opaque', '--project', 'p1'], bytes).text.trim();
    assert.deepEqual(ok(['key', 'get', id, '--project', 'p1', '--output', 'raw']).stdout, bytes);
    const pass = ok(['key', 'store', '--type', 'passphrase', '--project', 'p1', '--name', 'pw'], 'hunter2').text.trim();
    assert.equal(ok(['key', 'get', pass, '--project', 'p1', '--output', 'raw']).text, 'hunter2');
  });

  it('list shows the project\'s objects as a table or JSON, and none of another project\'s', () => {
    const id = ok(['key', 'create', '--project', 'p-list', '--name', 'listed']).text.trim();
    const rows = JSON.parse(ok(['key', 'list', '--project', 'p-list', '--json']).text) as Array<Record<string, unknown>>;
    assert.deepEqual(rows.map((r) => [r['id'], r['name']]), [[id, 'listed']]);
    const table = ok(['key', 'list', '--project', 'p-list']).text;
    assert.match(table, /^ID\s+TYPE\s+NAME/);
    assert.ok(table.includes(id));
    assert.deepEqual(JSON.parse(ok(['key', 'list', '--project', 'p-other', '--json']).text), []);
  });

  it('delete removes the object; a later get fails with exit 1 and E_KEY_NOT_FOUND', () => {
    const id = ok(['key', 'create', '--project', 'p1']).text.trim();
    ok(['key', 'delete', id, '--project', 'p1']);
    const gone = portcullis(['key', 'get', id, '--project', 'p1']);
    assert.equal(gone.status, 1);
    assert.match(gone.stderr, /E_KEY_NOT_FOUND/);
    const json = portcullis(['key', 'get', id, '--project', 'p1', '--output', 'json', '--json']);
    assert.equal((JSON.parse(json.stderr) as { error: { code: string } }).error.code, 'E_KEY_NOT_FOUND');
  });

  it('migrate copies the fixed key to the local keystore under the same id, once', () => {
    const first = JSON.parse(ok(['key', 'migrate', '--from', 'fixed', '--to', 'local', '--project', 'p-mig', '--json']).text) as Array<Record<string, unknown>>;
    assert.deepEqual(first.map((r) => [r['source_id'], r['target_id'], r['status']]), [[FIXED_KEY_ID, FIXED_KEY_ID, 'copied']]);
    assert.equal(ok(['key', 'get', FIXED_KEY_ID, '--project', 'p-mig']).text.trim(), fixedKey);
    const again = JSON.parse(ok(['key', 'migrate', '--from', 'fixed', '--to', 'local', '--project', 'p-mig', '--json']).text) as Array<Record<string, unknown>>;
    assert.deepEqual(again.map((r) => r['status']), ['present']);
    const dry = JSON.parse(ok(['key', 'migrate', '--from', 'fixed', '--to', 'local', '--project', 'p-dry', '--dry-run', '--json']).text) as Array<Record<string, unknown>>;
    assert.deepEqual(dry.map((r) => r['status']), ['would-copy']);
    assert.equal(portcullis(['key', 'get', FIXED_KEY_ID, '--project', 'p-dry']).status, 1, 'a dry run copies nothing');
  });

  it('migrate keeps the id for every project, as docs/cli.md says: ids are per project', () => {
    const rows = JSON.parse(ok(['key', 'migrate', '--from', 'fixed', '--to', 'local', '--project', 'p-two-a', '--project', 'p-two-b', '--json']).text) as Array<Record<string, unknown>>;
    assert.deepEqual(rows.map((r) => [r['project'], r['target_id'], r['status']]), [['p-two-a', FIXED_KEY_ID, 'copied'], ['p-two-b', FIXED_KEY_ID, 'copied']]);
    for (const project of ['p-two-a', 'p-two-b']) assert.equal(ok(['key', 'get', FIXED_KEY_ID, '--project', project]).text.trim(), fixedKey, project);
    ok(['key', 'delete', FIXED_KEY_ID, '--project', 'p-two-a']);
    assert.equal(ok(['key', 'get', FIXED_KEY_ID, '--project', 'p-two-b']).text.trim(), fixedKey, "deleting one project's copy leaves the other's");
  });

  it('--backend fixed overrides the configured backend', () => {
    assert.equal(ok(['key', 'get', FIXED_KEY_ID, '--project', 'any', '--backend', 'fixed']).text.trim(), fixedKey);
  });
});

describe('portcullis usage and config errors', () => {
  it('exits 2 with a hint on usage errors, before touching any backend', () => {
    for (const args of [['key', 'frobnicate'], ['key', 'create'], ['key', 'get', '--project', 'p'], ['key', 'store', '--type', 'weird', '--project', 'p'], ['key', 'create', '--project', 'p', '--length', 'big']]) {
      const run = portcullis(args);
      assert.equal(run.status, 2, `${args.join(' ')}: ${run.stderr}`);
      assert.match(run.stderr, /^portcullis: /);
    }
  });

  it('exits 3 on a bad config, listing the problem with its key path', () => {
    const bad = join(dir, 'bad.yaml');
    writeFileSync(bad, 'key_manager:\n  backend: local\n  local:\n    pth: /x\n');
    const run = portcullis(['key', 'list', '--project', 'p', '--config', bad]);
    assert.equal(run.status, 3);
    assert.match(run.stderr, /E_CONFIG_INVALID/);
    assert.match(run.stderr, /key_manager\.local\.pth: unknown key/);
  });

  it('--help lists every key command; each command has its own --help', () => {
    const help = ok(['--help']).text;
    for (const command of ['key create', 'key store', 'key get', 'key list', 'key delete', 'key migrate']) assert.ok(help.includes(command), command);
    assert.match(ok(['key', 'migrate', '--help']).text, /--from BACKEND/);
  });

  it('examples/local.yaml works exactly as shipped, with global options before or after the command', () => {
    const example = join(repoRoot, 'examples', 'local.yaml');
    const listed = portcullis(['--config', example, '--json', 'key', 'list', '--project', 'example']);
    assert.equal(listed.status, 0, listed.stderr);
    assert.ok(Array.isArray(JSON.parse(listed.text)));
    const run = portcullis(['key', 'create', '--project', 'example', '--config', example]);
    assert.equal(run.status, 0, run.stderr);
    assert.match(run.text.trim(), /^[0-9a-f-]{36}$/);
  });
});
