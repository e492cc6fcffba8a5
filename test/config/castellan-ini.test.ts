import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { importCastellanIni, parseIni } from '../../src/config/castellan-ini.js';
import { ConfigError } from '../../src/config/errors.js';
import { loadConfigFile } from '../../src/config/load.js';

const dir = mkdtempSync(join(tmpdir(), 'portcullis-ini-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** What a compute host's nova.conf holds for Castellan (trimmed to the parts that matter). */
const novaConf = `
[DEFAULT]
my_ip = 10.0.0.5
transport_url = rabbit://nova:secret@controller

[key_manager]
backend = barbican

[barbican]
barbican_endpoint = https://barbican.example.org:9311/
barbican_api_version = v1
auth_endpoint = https://keystone.example.org/v3
number_of_retries = 30
retry_delay = 2
verify_ssl = False
verify_ssl_path = /etc/ssl/certs/ca.pem
barbican_endpoint_type = internal
barbican_region_name = RegionTwo
send_service_user_token = true
`;

describe('importCastellanIni()', () => {
  it('maps every [barbican] option Castellan reads onto portcullis\' barbican section', () => {
    const path = join(dir, 'nova.conf');
    writeFileSync(path, novaConf);
    const loaded = loadConfigFile(path);
    const barbican = loaded.config.key_manager.barbican as Record<string, unknown>;
    assert.equal(loaded.config.key_manager.backend, 'barbican');
    assert.equal(barbican['endpoint'], 'https://barbican.example.org:9311/');
    assert.equal(barbican['api_version'], 'v1');
    assert.equal(barbican['number_of_retries'], 30);
    assert.equal(barbican['retry_delay'], 2);
    assert.equal(barbican['verify_ssl'], false);
    assert.equal(barbican['verify_ssl_path'], '/etc/ssl/certs/ca.pem');
    assert.equal(barbican['endpoint_type'], 'internal');
    assert.equal(barbican['region_name'], 'RegionTwo');
    assert.deepEqual(
      { type: (barbican['auth'] as Record<string, unknown>)['type'], url: (barbican['auth'] as Record<string, unknown>)['auth_url'] },
      { type: 'token', url: 'https://keystone.example.org/v3' },
      "Castellan acts with the caller's token, and so does the import",
    );
    assert.ok(loaded.warnings.some((w) => /send_service_user_token .*ignoring$/.test(w)), loaded.warnings.join('\n'));
  });

  it('accepts Castellan\'s class path as the backend name and its defaults when [barbican] is absent', () => {
    const imported = importCastellanIni('[key_manager]\nbackend = castellan.key_manager.barbican_key_manager.BarbicanKeyManager\n', 'x.conf');
    const km = imported.input['key_manager'] as Record<string, unknown>;
    assert.equal(km['backend'], 'barbican');
    assert.equal(((km['barbican'] as Record<string, unknown>)['auth'] as Record<string, unknown>)['auth_url'], 'http://localhost/identity/v3');
  });

  it("turns nova's ConfKeyManager and fixed_key into the fixed backend, with a warning to migrate", () => {
    const path = join(dir, 'conf-key.conf');
    writeFileSync(path, `[key_manager]\nbackend = nova.keymgr.conf_key_mgr.ConfKeyManager\nfixed_key = ${'0f'.repeat(32)}\n`);
    const loaded = loadConfigFile(path);
    assert.equal(loaded.config.key_manager.backend, 'fixed');
    assert.equal(loaded.config.key_manager.fixed?.key, '0f'.repeat(32));
    assert.ok(loaded.warnings.some((w) => /key migrate/.test(w)));
  });

  it('maps Castellan password credentials to password auth', () => {
    const imported = importCastellanIni(
      '[key_manager]\nauth_type = keystone_password\nusername = nova\npassword = pw\nproject_name = service\nuser_domain_name = Default\n[barbican]\nauth_endpoint = http://k/v3\n',
      'x.conf',
    );
    const auth = ((imported.input['key_manager'] as Record<string, unknown>)['barbican'] as Record<string, unknown>)['auth'];
    assert.deepEqual(auth, { type: 'password', auth_url: 'http://k/v3', username: 'nova', password: 'pw', project_name: 'service', user_domain_name: 'Default' });
  });

  it('refuses a Castellan backend portcullis does not have, naming the supported ones', () => {
    assert.throws(
      () => importCastellanIni('[key_manager]\nbackend = vault\n', 'vault.conf'),
      (err: unknown) => err instanceof ConfigError && err.code === 'E_CONFIG_INVALID' && /supported: barbican/.test(err.message),
    );
  });

  it('reports bad option values at their portcullis path', () => {
    const path = join(dir, 'bad.conf');
    writeFileSync(path, '[barbican]\nnumber_of_retries = lots\nbarbican_endpoint_type = sideways\n');
    assert.throws(
      () => loadConfigFile(path),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        const paths = err.issues.map((i) => i.path);
        assert.ok(paths.includes('key_manager.barbican.number_of_retries'), paths.join(', '));
        assert.ok(paths.includes('key_manager.barbican.endpoint_type'), paths.join(', '));
        return true;
      },
    );
  });
});

describe('parseIni()', () => {
  it('reads sections, both separators, comments and oslo continuation lines', () => {
    const sections = parseIni('# top\n[A]\nx = 1\ny: two\n; note\nz = first\n  second\n[a]\nw=3\n', 't.conf');
    assert.deepEqual(Object.fromEntries(sections.get('a') ?? []), { x: '1', y: 'two', z: 'first\nsecond', w: '3' });
  });

  it('fails with E_CONFIG_SYNTAX and the line number on a line that is not INI', () => {
    assert.throws(() => parseIni('[a]\n= nothing\n', 'broken.conf'), (err: unknown) => err instanceof ConfigError && err.code === 'E_CONFIG_SYNTAX' && /line 2/.test(err.message));
  });
});
