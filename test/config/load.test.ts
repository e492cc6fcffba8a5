import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { ConfigError } from '../../src/config/errors.js';
import { loadConfigFile, validateConfig } from '../../src/config/load.js';
import { repoRoot } from '../helpers/paths.js';

const dir = mkdtempSync(join(tmpdir(), 'portcullis-config-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function file(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

function loadError(path: string): ConfigError {
  try {
    loadConfigFile(path);
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`);
    return err;
  }
  assert.fail(`${path} loaded but should not have`);
}

describe('loadConfigFile()', () => {
  it('reports every problem of an invalid config at once, each with its key path', () => {
    const err = loadError(
      file(
        'many-errors.yaml',
        [
          'colour: blue', // unknown top-level key
          'key_manager:',
          '  backend: fixed',
          '  fixed:',
          '    key: nothex', // bad value
          '    allow_insecure: "yes"', // wrong type
          '    extra: 1', // unknown nested key
          'cache:',
          '  ttl_seconds: -5', // out of range
          'retry:',
          '  attempts: many', // wrong type
        ].join('\n'),
      ),
    );
    assert.equal(err.code, 'E_CONFIG_INVALID');
    const paths = err.issues.map((i) => i.path).sort();
    for (const expected of ['colour', 'key_manager.fixed.allow_insecure', 'key_manager.fixed.extra', 'cache.ttl_seconds', 'retry.attempts']) {
      assert.ok(paths.includes(expected), `expected an issue at ${expected}; got ${paths.join(', ')}`);
    }
    for (const issue of err.issues) assert.ok(err.message.includes(issue.path), `message lists ${issue.path}`);
  });

  it('rejects an unknown backend name, naming the choices', () => {
    const err = loadError(file('bad-backend.yaml', 'key_manager:\n  backend: vault\n'));
    assert.equal(err.issues[0]?.path, 'key_manager.backend');
    assert.match(err.issues[0]?.message ?? '', /local/);
  });

  it('reports the selected backend\'s missing settings at that backend\'s path', () => {
    const err = loadError(file('fixed-no-section.yaml', 'key_manager:\n  backend: fixed\n'));
    const paths = err.issues.map((i) => i.path);
    assert.ok(paths.includes('key_manager.fixed.allow_insecure'), paths.join(', '));
    assert.ok(paths.includes('key_manager.fixed.key'), paths.join(', '));
  });

  it('gives E_CONFIG_NOT_FOUND for a missing file and E_CONFIG_SYNTAX with the line for broken YAML', () => {
    assert.equal(loadError(join(dir, 'absent.yaml')).code, 'E_CONFIG_NOT_FOUND');
    const err = loadError(file('broken.yaml', 'key_manager:\n  backend: local\n   bad: [\n'));
    assert.equal(err.code, 'E_CONFIG_SYNTAX');
    assert.match(err.message, /line/i);
  });

  it('reads secrets from *_file and *_credential, never requiring them inline', () => {
    const keyFile = file('fixed.key', `${'cd'.repeat(32)}\n`);
    const viaFile = loadConfigFile(file('key-file.yaml', `key_manager:\n  backend: fixed\n  fixed:\n    key_file: ${keyFile}\n    allow_insecure: true\n`));
    assert.equal(viaFile.config.key_manager.fixed?.key, 'cd'.repeat(32), 'the trailing newline is not part of the secret');
    assert.equal(Object.hasOwn(viaFile.config.key_manager.fixed ?? {}, 'key_file'), false);

    const credentials = mkdtempSync(join(dir, 'creds-'));
    writeFileSync(join(credentials, 'fixed-key'), 'ef'.repeat(16));
    process.env['CREDENTIALS_DIRECTORY'] = credentials;
    try {
      const viaCredential = loadConfigFile(
        file('key-cred.yaml', 'key_manager:\n  backend: fixed\n  fixed:\n    key_credential: fixed-key\n    allow_insecure: true\n'),
      );
      assert.equal(viaCredential.config.key_manager.fixed?.key, 'ef'.repeat(16));
    } finally {
      delete process.env['CREDENTIALS_DIRECTORY'];
    }
  });

  it('names the unreadable secret file at its key path, and refuses two sources for one secret', () => {
    const err = loadError(
      file('key-missing.yaml', `key_manager:\n  backend: fixed\n  fixed:\n    key_file: ${join(dir, 'nope.key')}\n    allow_insecure: true\n`),
    );
    const issue = err.issues.find((i) => i.path === 'key_manager.fixed.key_file');
    assert.ok(issue, err.message);
    assert.match(issue.message, /ENOENT/);
    const both = loadError(file('key-both.yaml', `key_manager:\n  backend: fixed\n  fixed:\n    key: ${'ab'.repeat(32)}\n    key_file: /etc/hostname\n    allow_insecure: true\n`));
    assert.ok(both.issues.some((i) => /only one of key, key_file, key_credential/.test(i.message)), both.message);
  });

  it('applies --backend before validation', () => {
    const path = file('backend-override.yaml', `key_manager:\n  backend: local\n  fixed:\n    key: ${'ab'.repeat(32)}\n    allow_insecure: true\n`);
    assert.equal(loadConfigFile(path, { backend: 'fixed' }).config.key_manager.backend, 'fixed');
  });

  it('returns a frozen config with every default filled in', () => {
    const { config } = validateConfig({}, 'test');
    assert.equal(config.key_manager.backend, 'local');
    assert.ok(config.key_manager.local, 'the selected backend section is filled from its defaults');
    assert.equal(typeof config.cache.ttl_seconds, 'number');
    assert.equal(Object.isFrozen(config), true);
  });
});

describe('examples/', () => {
  for (const name of readdirSync(join(repoRoot, 'examples')).filter((n) => n.endsWith('.yaml'))) {
    it(`${name} is valid as shipped`, () => {
      const loaded = loadConfigFile(join(repoRoot, 'examples', name));
      assert.ok(loaded.config.key_manager.backend);
    });
  }
});
