/**
 * Secret hygiene on the host: key operations through the admin CLI and
 * portcullisd, on the local keystore and on a real Barbican behind a real
 * Keystone, the happy paths and the error paths (wrong and garbage tokens,
 * missing keys, another project's keys). Everything they leave behind — each
 * process's output, the daemon's log and audit file, every error body, the
 * keystore files — is scanned for every key's bytes in each form
 * (helpers/secret-scan.ts). The only place a key may appear is the standard
 * output of `portcullis key get`, which is asked for it; that output is the
 * scan's positive control.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { stringify } from 'yaml';
import { validateConfig } from '../src/config/load.js';
import type { KeyManager } from '../src/keyclient/key-manager.js';
import { openKeyManager } from '../src/keyclient/open.js';
import { plainAllocator } from '../src/util/secure-memory.js';
import { startBarbican, type BarbicanServer } from './fixtures/barbican-server.js';
import { startDaemonProcess, type DaemonProcess } from './fixtures/daemon.js';
import { startKeystone, type KeystoneServer } from './fixtures/keystone-server.js';
import { describeSecrets, findSecrets, type Haystack } from './helpers/secret-scan.js';
import { waitUntil } from './helpers/wait.js';

const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const allocator = plainAllocator();
const dir = mkdtempSync(join(tmpdir(), 'portcullis-hygiene-'));
const fixedKey = randomBytes(32);
const storedKey = randomBytes(32);
let keystone: KeystoneServer;
let barbican: BarbicanServer;
let config: Record<string, unknown>;
let configPath: string;
let projectA: string;
let projectB: string;

/** Everything to be scanned, and the outputs that are asked for keys. */
const haystacks: Haystack[] = [];
const askedForKeys: Haystack[] = [];

before(async () => {
  keystone = await startKeystone();
  barbican = await startBarbican({ pipeline: 'keystone', keystone });
  projectA = keystone.projects.a.id;
  projectB = keystone.projects.b.id;
  const user = keystone.users.portcullis;
  config = {
    key_manager: {
      backend: 'local',
      local: { path: join(dir, 'keystore.db'), kek_file: join(dir, 'kek') },
      barbican: { endpoint: barbican.url, timeout: 10, auth: { type: 'password', auth_url: keystone.authUrl, username: user.name, password: user.password } },
      fixed: { key: fixedKey.toString('hex'), allow_insecure: true },
    },
    retry: { attempts: 2, base_delay_seconds: 0.05 },
  };
  configPath = join(dir, 'cli.yaml');
  writeFileSync(configPath, stringify(config));
});
after(async () => {
  await barbican?.stop();
  await keystone?.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** Runs the CLI; its output joins the haystacks (or, for `key get`, the positive control). */
function portcullis(args: string[], options: { input?: Buffer; token?: string; expect?: number } = {}): string {
  const run = spawnSync(process.execPath, [cli, ...args, '--config', configPath], {
    input: options.input,
    env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', ...(options.token === undefined ? {} : { OS_AUTH_TOKEN: options.token }) },
    timeout: 60_000,
  });
  const name = `portcullis ${args.join(' ')}`;
  const stdout = { name: `${name} (stdout)`, data: run.stdout };
  if (args[0] === 'key' && args[1] === 'get' && !args.includes('--metadata-only') && run.status === 0) askedForKeys.push(stdout);
  else haystacks.push(stdout);
  haystacks.push({ name: `${name} (stderr)`, data: run.stderr });
  assert.equal(run.status, options.expect ?? 0, `${name}: exit ${String(run.status)}: ${run.stderr.toString()}`);
  return run.stdout.toString();
}

const errorCodeOf = (text: string) => /E_[A-Z_]+/.exec(text)?.[0];

describe('secret hygiene: CLI and daemon on the host', () => {
  it('the admin CLI on the local keystore, Barbican and fixed, with its error paths', () => {
    const local = portcullis(['key', 'create', '--project', projectA, '--name', 'hygiene-local']).trim();
    portcullis(['key', 'create', '--project', projectA, '--length', '512']);
    portcullis(['key', 'store', '--type', 'symmetric', '--project', projectA, '--name', 'hygiene-stored'], { input: storedKey });
    for (const output of ['hex', 'raw', 'json']) portcullis(['key', 'get', local, '--project', projectA, '--output', output]);
    portcullis(['key', 'get', local, '--project', projectA, '--metadata-only', '--output', 'json']);
    portcullis(['key', 'list', '--project', projectA, '--json']);
    portcullis(['key', 'get', local, '--project', projectB], { expect: 1 });
    portcullis(['key', 'get', '00000000-0000-4000-8000-000000000000', '--project', projectA], { expect: 1 });
    portcullis(['key', 'migrate', '--from', 'fixed', '--to', 'local', '--project', projectA, '--json']);
    portcullis(['key', 'migrate', '--from', 'local', '--to', 'barbican', '--project', projectA, '--json']);

    const remote = portcullis(['key', 'create', '--backend', 'barbican', '--project', projectA]).trim();
    portcullis(['key', 'get', remote, '--backend', 'barbican', '--project', projectA, '--output', 'hex']);
    portcullis(['key', 'store', '--backend', 'barbican', '--type', 'passphrase', '--project', projectA], { input: Buffer.from(storedKey.toString('hex')) });
    const forbidden = portcullis(['key', 'get', remote, '--backend', 'barbican', '--project', projectB], { expect: 1 });
    assert.equal(forbidden, '');
    portcullis(['key', 'get', remote, '--backend', 'barbican', '--project', projectA], { token: 'garbage-token', expect: 1 });
    portcullis(['key', 'get', '00000000-0000-4000-8000-000000000000', '--backend', 'barbican', '--project', projectA], { expect: 1 });
    portcullis(['key', 'delete', remote, '--backend', 'barbican', '--project', projectA]);
    portcullis(['key', 'get', remote, '--backend', 'barbican', '--project', projectA], { expect: 1 });
    const codes = haystacks.filter((h) => h.name.endsWith('(stderr)')).map((h) => errorCodeOf(h.data.toString())).filter((c) => c !== undefined);
    assert.deepEqual([...new Set(codes)].sort(), ['E_BACKEND_AUTH', 'E_KEY_FORBIDDEN', 'E_KEY_NOT_FOUND'], 'every error path above was taken');
  });

  for (const backend of ['local', 'barbican'] as const) {
    it(`portcullisd on ${backend}: key fetches, refusals and bad tokens, with its log and audit file`, async () => {
      const home = mkdtempSync(join(dir, `daemon-${backend}-`));
      const audit = join(home, 'audit.log');
      const km = await openKeyManager(validateConfig(config, 'hygiene').config, { allocator }, backend);
      let daemon: DaemonProcess | undefined;
      try {
        const id = await km.createKey({ projectId: projectA }, { algorithm: 'aes', length: 256 });
        daemon = await startDaemonProcess({
          dir: home,
          config: { ...config, key_manager: { ...(config['key_manager'] as object), backend }, log: { level: 'debug', format: 'json', audit_file: audit } },
        });
        const attach = (name: string, body: Record<string, unknown>) =>
          daemon!.call('PUT', `/v1/volumes/${name}`, { device: '/dev/portcullis-hygiene-none', project_id: projectA, ...body });
        const answers = [
          await attach('ok1', { key: { id } }), // the key is fetched (and cached); the missing device fails the attach after that
          await attach('ok2', { key: { id } }),
          await attach('missing', { key: { id: '00000000-0000-4000-8000-000000000000' } }),
          await attach('other', { key: { id }, project_id: projectB }),
          await attach('token', { key: { id }, auth: { token: 'garbage-token' } }),
          await daemon.call('GET', '/v1/cache'),
          await daemon.call('GET', '/metrics'),
        ];
        for (const [i, answer] of answers.entries()) haystacks.push({ name: `portcullisd ${backend} answer ${i}`, data: answer.text });
        const codes = answers.slice(0, 5).map((a) => (a.body as { error?: { code: string } }).error?.code);
        // The key was fetched (then the missing device failed the attach); every refusal path was taken.
        assert.deepEqual(codes.slice(2), backend === 'barbican' ? ['E_KEY_NOT_FOUND', 'E_KEY_FORBIDDEN', 'E_BACKEND_AUTH'] : ['E_KEY_NOT_FOUND', 'E_KEY_NOT_FOUND', codes[0]]);
        assert.ok(!codes[0]?.startsWith('E_KEY') && !codes[0]?.startsWith('E_BACKEND'), `the first attach got past its key: ${String(codes[0])}`);
        assert.ok((answers[5]?.body as { misses: number }).misses >= 1, 'the daemon fetched the key');
        await waitUntil('audit lines for every attach', () => existsSync(audit) && readFileSync(audit, 'utf8').split('\n').filter((l) => l.includes('key_access')).length >= 5, {
          describe: () => (existsSync(audit) ? readFileSync(audit, 'utf8') : '(no audit file)'),
        });
      } finally {
        await daemon?.stop();
        await km.close();
      }
      haystacks.push({ name: `portcullisd ${backend} log`, data: daemon?.log() ?? '' }, { name: `portcullisd ${backend} audit`, data: readFileSync(audit) });
    });
  }

  it('no key, in any form, in any output, log, audit line, error body or keystore file; and the scan does find them in `key get` output', async (t) => {
    const keys = await everyKey();
    assert.ok(keys.length >= 8, `found ${keys.length} keys to look for`);
    const files = ['keystore.db', 'keystore.db-wal', 'keystore.db-shm'].map((f) => join(dir, f)).filter((f) => existsSync(f));
    const all = [...haystacks, ...files.map((f) => ({ name: f, data: readFileSync(f) }))];
    const found = findSecrets(keys, all);
    const bytes = all.reduce((n, h) => n + Buffer.byteLength(h.data), 0);
    t.diagnostic(`scanned ${all.length} haystacks (${bytes} bytes) for ${keys.length} keys in 5 forms each`);
    assert.equal(found.length, 0, describeSecrets(found, all));
    // Positive control: the outputs asked for keys hold them, so the scan is looking for the right bytes.
    assert.equal(askedForKeys.length, 4);
    assert.deepEqual(new Set(findSecrets(keys, askedForKeys).map((o) => o.form)), new Set(['hex', 'raw', 'base64']));
  });
});

/** Every key the tests made or used, read back through the key managers: local, Barbican, the fixed key, the KEK. */
async function everyKey(): Promise<Uint8Array[]> {
  const keys: Uint8Array[] = [fixedKey, storedKey, readFileSync(join(dir, 'kek'))];
  for (const backend of ['local', 'barbican'] as const) {
    const km: KeyManager = await openKeyManager(validateConfig(config, 'hygiene').config, { allocator }, backend);
    try {
      for (const projectId of [projectA, projectB]) {
        for (const meta of await km.list({ projectId })) {
          if (meta.id === undefined) continue;
          keys.push(Buffer.from((await km.get({ projectId }, meta.id)).bytes()));
        }
      }
    } finally {
      await km.close();
    }
  }
  return keys;
}
