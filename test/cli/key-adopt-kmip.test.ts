/**
 * `portcullis key adopt` against a real PyKMIP server: a key registered by
 * PyKMIP's own client (no portcullis project attribute) is invisible to
 * every project, as a new user finds it, until an admin adopts it for one.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { pykmipClient, startKmip, type KmipServer } from '../fixtures/kmip-server.js';

const cli = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
let kmip: KmipServer;
let config: string;
let auditFile: string;
let adoptions: string;

before(async () => {
  kmip = await startKmip();
  config = join(kmip.dir, 'portcullis.yaml');
  auditFile = join(kmip.dir, 'audit.log');
  adoptions = join(kmip.dir, 'adoptions.json');
  const o = kmip.options();
  writeFileSync(
    config,
    [
      'key_manager:',
      '  backend: kmip',
      '  kmip:',
      `    host: ${String(o['host'])}`,
      `    port: ${String(o['port'])}`,
      `    ca_file: ${String(o['ca_file'])}`,
      `    cert_file: ${String(o['cert_file'])}`,
      `    key_file: ${String(o['key_file'])}`,
      `    adoptions_file: ${adoptions}`,
      'log:',
      `  audit_file: ${auditFile}`,
    ].join('\n'),
  );
});
after(async () => kmip?.stop());

function portcullis(args: string[]) {
  const result = spawnSync(process.execPath, [cli, ...args], { env: { ...process.env, PORTCULLIS_CONFIG: config }, timeout: 60_000 });
  return { status: result.status, text: result.stdout.toString(), stderr: result.stderr.toString() };
}

/** A key as another client (an HSM administrator) registers it: no project attribute. The client shares portcullis' certificate CN, as PyKMIP lets only the owner CN read an object. */
function foreignKey(bytes: Buffer): string {
  return pykmipClient(kmip, kmip.client, ['register-foreign', 'hsm-admin-key'], bytes.toString('hex')).trim();
}

const auditLines = () => readFileSync(auditFile, 'utf8').split('\n').filter((l) => l.includes('"key_adopt"')).map((l) => JSON.parse(l) as Record<string, unknown>);

describe('portcullis key adopt (kmip, real PyKMIP)', () => {
  it('a foreign key is not found for any project; adopted for P it reads for P only; adopting it for Q is refused; again for P is a no-op', () => {
    const bytes = randomBytes(32);
    const id = foreignKey(bytes);
    const before = portcullis(['key', 'get', id, '--project', 'P']);
    assert.equal(before.status, 1, before.stderr);
    assert.match(before.stderr, /E_KEY_NOT_FOUND/);

    const adopted = portcullis(['key', 'adopt', id, '--project', 'P', '--json']);
    assert.equal(adopted.status, 0, adopted.stderr);
    assert.deepEqual(JSON.parse(adopted.text), { id, project_id: 'P', outcome: 'adopted' });
    assert.equal(statSync(adoptions).mode & 0o777, 0o600);

    const got = portcullis(['key', 'get', id, '--project', 'P']);
    assert.equal(got.status, 0, got.stderr);
    assert.equal(got.text.trim(), bytes.toString('hex'));
    const listed = portcullis(['key', 'list', '--project', 'P', '--json']);
    assert.deepEqual((JSON.parse(listed.text) as Array<{ id: string }>).map((r) => r.id), [id], 'list shows the adopted key');

    const other = portcullis(['key', 'get', id, '--project', 'Q']);
    assert.equal(other.status, 1);
    assert.match(other.stderr, /E_KEY_NOT_FOUND/);
    assert.deepEqual(JSON.parse(portcullis(['key', 'list', '--project', 'Q', '--json']).text), []);

    const refused = portcullis(['key', 'adopt', id, '--project', 'Q']);
    assert.equal(refused.status, 1);
    assert.match(refused.stderr, /E_KEY_OWNED_ELSEWHERE/);
    assert.match(refused.stderr, /project P/);
    assert.match(portcullis(['key', 'get', id, '--project', 'Q']).stderr, /E_KEY_NOT_FOUND/, 'the refusal changed nothing');

    const again = portcullis(['key', 'adopt', id, '--project', 'P', '--json']);
    assert.equal(again.status, 0, again.stderr);
    assert.equal((JSON.parse(again.text) as { outcome: string }).outcome, 'already');

    const audit = auditLines().filter((l) => l['key_id'] === id).map((l) => [l['project_id'], l['outcome']]);
    assert.deepEqual(audit, [['P', 'adopted'], ['Q', 'E_KEY_OWNED_ELSEWHERE'], ['P', 'already']]);
  });

  it("a key portcullis made for project P cannot be adopted for Q, and is 'already' P's", () => {
    const id = portcullis(['key', 'create', '--project', 'P']).text.trim();
    assert.match(id, /\S/);
    const refused = portcullis(['key', 'adopt', id, '--project', 'Q']);
    assert.equal(refused.status, 1);
    assert.match(refused.stderr, /E_KEY_OWNED_ELSEWHERE/);
    assert.equal((JSON.parse(portcullis(['key', 'adopt', id, '--project', 'P', '--json']).text) as { outcome: string }).outcome, 'already');
  });

  it('an id the server does not have is E_KEY_NOT_FOUND, and nothing is recorded', () => {
    const run = portcullis(['key', 'adopt', '99999', '--project', 'P']);
    assert.equal(run.status, 1);
    assert.match(run.stderr, /E_KEY_NOT_FOUND/);
    assert.doesNotMatch(readFileSync(adoptions, 'utf8'), /"99999"/);
  });

  it('deleting an adopted key through portcullis destroys it and drops its claim', () => {
    const id = foreignKey(randomBytes(32));
    assert.equal(portcullis(['key', 'adopt', id, '--project', 'P']).status, 0);
    assert.match(readFileSync(adoptions, 'utf8'), new RegExp(`"${id}"`));
    const del = portcullis(['key', 'delete', id, '--project', 'P']);
    assert.equal(del.status, 0, del.stderr);
    assert.doesNotMatch(readFileSync(adoptions, 'utf8'), new RegExp(`"${id}"`));
    assert.match(portcullis(['key', 'get', id, '--project', 'P']).stderr, /E_KEY_NOT_FOUND/);
  });
});
