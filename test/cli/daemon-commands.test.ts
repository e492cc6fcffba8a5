import assert from 'node:assert/strict';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { AttachAnswer, DetachAnswer, RekeyAnswer } from '../../src/api/wire.js';
import { cacheFigures, healthOk, portcullis, startStandIn, volumeA, volumeB, type StandIn } from './daemon-stand-in.js';

/**
 * The CLI's daemon commands against a stand-in daemon (daemon-stand-in.ts,
 * canned answers): what each sends, what it prints for people and for
 * scripts, and its exit code. Tests against the real portcullisd live in
 * test/daemon/.
 */

let standIn: StandIn;
before(async () => {
  standIn = await startStandIn();
});
after(() => standIn.close());

const cli = (args: string[], env?: NodeJS.ProcessEnv) => portcullis(['--socket', standIn.socketPath, ...args], env === undefined ? {} : { env });
const lastSeen = () => standIn.seen.at(-1);

const attachAnswer: AttachAnswer = {
  name: 'vol-1', mapper_path: '/dev/mapper/vol-1', device: '/dev/loop3', provider: 'luks2', luks_uuid: '0b5f7c7e-5c3a-4c1b-8d1e-2a7b9e0f1c2d',
  size_bytes: 1056964608, key_id: 'k-1', key_source: 'backend', opened: true, formatted: true, keyslot_upgraded: false, timings_ms: { key: 12, format: 1200, open: 500, total: 1750 },
};
const detachAnswer: DetachAnswer = { name: 'vol-1', closed: true, deferred: false, timings_ms: { total: 210 } };

describe('portcullis health', () => {
  it('exits 0 when ok, printing the status and a table of checks', async () => {
    const run = await cli(['health']);
    assert.equal(run.status, 0, run.stderr);
    assert.match(run.stdout, /^status: ok \(portcullisd 0\.1\.0-stand-in, up 1h 2m, backend local, 2 volume\(s\)\)\n/);
    assert.match(run.stdout, /^CHECK\s+OK\s+DETAIL$/m);
    assert.match(run.stdout, /^dm_crypt\s+ok\s+dm-crypt v1\.23\.0$/m);
  });

  it('exits 1 when degraded (HTTP 200), marking the failed check', async () => {
    const degraded = { ...healthOk, status: 'degraded', checks: { ...healthOk.checks, key_manager: { ok: false, detail: 'unreachable (E_BACKEND_UNAVAILABLE)' } } };
    standIn.answer('GET', '/v1/health', { json: degraded });
    try {
      const run = await cli(['health']);
      assert.equal(run.status, 1, run.stderr);
      assert.match(run.stdout, /^key_manager\s+FAIL\s+unreachable \(E_BACKEND_UNAVAILABLE\)$/m);
    } finally {
      standIn.answer('GET', '/v1/health', { json: healthOk });
    }
  });

  it('exits 1 when failing (HTTP 503 with a health body), and --json prints that body', async () => {
    const failing = { ...healthOk, status: 'failing', checks: { ...healthOk.checks, dm_crypt: { ok: false, detail: 'device-mapper has no crypt target: modprobe dm-crypt' } } };
    standIn.answer('GET', '/v1/health', { status: 503, json: failing });
    try {
      const run = await cli(['health', '--json']);
      assert.equal(run.status, 1, run.stderr);
      assert.equal(run.stderr, '');
      assert.deepEqual(JSON.parse(run.stdout), failing);
    } finally {
      standIn.answer('GET', '/v1/health', { json: healthOk });
    }
  });
});

describe('portcullis status', () => {
  it('shows version, uptime, socket, health, backend, volume count and cache hit ratio on one screen', async () => {
    const run = await cli(['status']);
    assert.equal(run.status, 0, run.stderr);
    assert.match(run.stdout, /^daemon\s+portcullisd 0\.1\.0-stand-in, up 1h 2m$/m);
    assert.match(run.stdout, new RegExp(`^socket\\s+${standIn.socketPath.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`, 'm'));
    assert.match(run.stdout, /^health\s+ok: all checks pass$/m);
    assert.match(run.stdout, /^backend\s+local$/m);
    assert.match(run.stdout, /^volumes\s+2$/m);
    assert.match(run.stdout, /^cache\s+1 key\(s\), hit ratio 97\.5% \(39 hits, 1 misses\), 0 stale served$/m);
  });

  it('--json: the health answer plus socket and cache figures with hit_ratio', async () => {
    const run = await cli(['status', '--json']);
    assert.equal(run.status, 0, run.stderr);
    assert.deepEqual(JSON.parse(run.stdout), { socket: standIn.socketPath, ...healthOk, cache: { ...cacheFigures, hit_ratio: 39 / 40 } });
  });

  it('still shows the rest when the cache figures need the admin role', async () => {
    standIn.answer('GET', '/v1/cache', { status: 403, json: { error: { code: 'E_PEER_FORBIDDEN', message: 'uid 1000 holds role agent', details: {} } } });
    try {
      const run = await cli(['status']);
      assert.equal(run.status, 0, run.stderr);
      assert.match(run.stdout, /^cache\s+needs the admin role \(E_PEER_FORBIDDEN\)$/m);
      assert.equal(JSON.parse((await cli(['status', '--json'])).stdout).cache, null);
    } finally {
      standIn.answer('GET', '/v1/cache', { json: cacheFigures });
    }
  });
});

describe('portcullis volumes and volume', () => {
  it('volumes prints a table for people, one row per mapping', async () => {
    const run = await cli(['volumes']);
    assert.equal(run.status, 0, run.stderr);
    const [header, ...rows] = run.stdout.trimEnd().split('\n');
    assert.match(header ?? '', /^NAME\s+DEVICE\s+TYPE\s+SIZE\s+RO\s+IN USE\s+ORIGIN\s+PROJECT\s+KEY$/);
    assert.equal(rows.length, 2);
    assert.match(rows[0] ?? '', /^volume-a\s+\/dev\/loop3\s+LUKS2\s+1008\.0 MiB\s+no\s+yes\s+attached\s+p1\s+2f0d8c2e/);
    assert.match(rows[1] ?? '', /^volume-b\s+-\s+PLAIN\s+-\s+yes\s+no\s+adopted\s+-\s+-$/);
  });

  it('volumes --json prints the array of volumes exactly as the daemon answered', async () => {
    const run = await cli(['volumes', '--json']);
    assert.equal(run.status, 0, run.stderr);
    assert.deepEqual(JSON.parse(run.stdout), [volumeA, volumeB]);
  });

  it('volume NAME asks GET /v1/volumes/NAME and prints its fields, or JSON', async () => {
    standIn.answer('GET', '/v1/volumes/volume-a', { json: volumeA });
    const run = await cli(['volume', 'volume-a']);
    assert.equal(run.status, 0, run.stderr);
    assert.equal(lastSeen()?.url, '/v1/volumes/volume-a');
    assert.match(run.stdout, /^cipher\s+aes-xts-plain64 \(512 bit key\)$/m);
    assert.match(run.stdout, /^origin\s+attached \(through this daemon\)$/m);
    assert.deepEqual(JSON.parse((await cli(['volume', 'volume-a', '--json'])).stdout), volumeA);
  });
});

describe('portcullis attach, detach, resize', () => {
  it('attach sends PUT /v1/volumes/NAME with the os-brick-style body built from its flags', async () => {
    standIn.answer('PUT', '/v1/volumes/vol-1', { json: attachAnswer });
    const run = await cli(
      ['attach', 'vol-1', '--device', '/dev/loop3', '--key-id', 'k-1', '--project', 'p1', '--provider', 'luks2', '--format', 'if-blank', '--cipher', 'aes-xts-plain64', '--key-size', '512', '--allow-discards', '--symlink'],
    );
    assert.equal(run.status, 0, run.stderr);
    assert.deepEqual(lastSeen()?.body, {
      device: '/dev/loop3', key: { id: 'k-1' }, project_id: 'p1', provider: 'luks2', cipher: 'aes-xts-plain64', key_size: 512, allow_discards: true, format: 'if-blank', symlink: true,
    });
    assert.match(run.stdout, /^mapper_path\s+\/dev\/mapper\/vol-1$/m);
    assert.match(run.stdout, /^opened\s+yes \(formatted first: the device was blank\)$/m);
    assert.match(run.stdout, /^timings\s+key 12 ms, format 1200 ms, open 500 ms, total 1750 ms$/m);
  });

  it('attach --json prints the attach answer as the daemon sent it', async () => {
    standIn.answer('PUT', '/v1/volumes/vol-1', { json: attachAnswer });
    const run = await cli(['attach', 'vol-1', '--device', '/dev/loop3', '--key-id', 'k-1', '--project', 'p1', '--json']);
    assert.equal(run.status, 0, run.stderr);
    assert.deepEqual(JSON.parse(run.stdout), attachAnswer);
  });

  it('attach takes the Keystone token from $OS_AUTH_TOKEN into the body; there is no flag for it', async () => {
    standIn.answer('PUT', '/v1/volumes/vol-1', { json: attachAnswer });
    const run = await cli(['attach', 'vol-1', '--device', '/dev/loop3', '--key-id', 'k-1'], { PORTCULLIS_PROJECT: 'p-env', OS_AUTH_TOKEN: 'gAAAA-token' });
    assert.equal(run.status, 0, run.stderr);
    const body = lastSeen()?.body as Record<string, unknown>;
    assert.deepEqual([body['project_id'], body['auth']], ['p-env', { token: 'gAAAA-token' }]);
    const flag = await cli(['attach', 'vol-1', '--device', '/dev/loop3', '--key-id', 'k-1', '--project', 'p1', '--token', 'x']);
    assert.equal(flag.status, 2);
  });

  it('refuses bad or missing flags with exit 2, naming the flag, before anything is sent', async () => {
    const before = standIn.seen.length;
    const cases: [string[], RegExp][] = [
      [['attach', 'vol-1', '--key-id', 'k', '--project', 'p'], /--device DEV is required/],
      [['attach', 'vol-1', '--device', '/dev/loop3', '--project', 'p'], /--key-id ID is required/],
      [['attach', 'vol-1', '--device', '/dev/loop3', '--key-id', 'k'], /--project P is required/],
      [['attach', 'vol-1', '--device', '/tmp/disk', '--key-id', 'k', '--project', 'p'], /--device: must be a \/dev path/],
      [['attach', 'vol-1', '--device', '/dev/loop3', '--key-id', 'k', '--project', 'p', '--format', 'always'], /--format: /],
      [['attach', 'vol-1', '--device', '/dev/loop3', '--key-id', 'k', '--project', 'p', '--key-size', 'big'], /--key-size wants a whole number/],
      [['attach', 'vol-1', '--device', '/dev/loop3', '--key-id', 'k', '--project', 'p', '--key-size', '100'], /--key-size: /],
      [['attach', '../etc', '--device', '/dev/loop3', '--key-id', 'k', '--project', 'p'], /not a valid volume name/],
      [['detach'], /takes 1 argument/],
      [['ephemeral', 'attach', 'i-1', 'd/1', '--device', '/dev/vdb', '--project', 'p'], /DISK "d\/1" is not valid/],
      [['ephemeral', 'attach', 'i-1', 'd1', '--device', '/dev/vdb', '--project', 'p', '--scope', 'host'], /--scope: /],
      [['ephemeral', 'detach', 'i-1', 'd1', '--erase'], /--project P is required/],
      [['cache', 'evict', 'a b'], /is not a key id/],
    ];
    for (const [args, message] of cases) {
      const run = await cli(args, { PORTCULLIS_PROJECT: '' });
      assert.equal(run.status, 2, `${args.join(' ')}: ${run.stderr}`);
      assert.match(run.stderr, message, args.join(' '));
    }
    assert.equal(standIn.seen.length, before, 'no request reached the daemon');
  });

  it('detach sends DELETE, with ?deferred=true when asked, and says what happened', async () => {
    standIn.answer('DELETE', '/v1/volumes/vol-1', { json: detachAnswer });
    const run = await cli(['detach', 'vol-1']);
    assert.equal(run.status, 0, run.stderr);
    assert.equal(run.stdout, 'vol-1: closed (210 ms)\n');
    standIn.answer('DELETE', '/v1/volumes/vol-1?deferred=true', { json: { ...detachAnswer, closed: false, deferred: true } });
    const deferred = await cli(['detach', 'vol-1', '--deferred', '--json']);
    assert.equal(deferred.status, 0, deferred.stderr);
    assert.equal(lastSeen()?.url, '/v1/volumes/vol-1?deferred=true');
    assert.deepEqual(JSON.parse(deferred.stdout), { ...detachAnswer, closed: false, deferred: true });
  });

  it('a busy volume surfaces E_VOLUME_BUSY and exits 1', async () => {
    standIn.answer('DELETE', '/v1/volumes/held', { status: 409, json: { error: { code: 'E_VOLUME_BUSY', message: 'Mapping held is held open by 1 holder(s)', details: { holders: 1 } } } });
    const run = await cli(['detach', 'held']);
    assert.equal(run.status, 1);
    assert.equal(run.stderr, 'portcullis: E_VOLUME_BUSY: Mapping held is held open by 1 holder(s)\n');
  });

  it('resize sends POST /v1/volumes/NAME/resize with key and project and prints the volume', async () => {
    standIn.answer('POST', '/v1/volumes/volume-a/resize', { json: volumeA });
    const run = await cli(['resize', 'volume-a', '--key-id', 'k-1', '--project', 'p1', '--json']);
    assert.equal(run.status, 0, run.stderr);
    assert.deepEqual(lastSeen()?.body, { key: { id: 'k-1' }, project_id: 'p1' });
    assert.deepEqual(JSON.parse(run.stdout), volumeA);
  });

  it('rekey sends POST /v1/volumes/NAME/rekey with both keys, the project and the device, and says what changed', async () => {
    const answer: RekeyAnswer = { name: 'volume-a', device: '/dev/loop3', luks_version: 2, online: false, changed: true, slot: 1, removed_slot: 0, recorded_in: ['token'], key_id: 'k-2', timings_ms: { keys: 2, total: 400 } };
    standIn.answer('POST', '/v1/volumes/volume-a/rekey', { json: answer });
    const run = await cli(['rekey', 'volume-a', '--key-id', 'k-1', '--new-key-id', 'k-2', '--project', 'p1', '--device', '/dev/loop3']);
    assert.equal(run.status, 0, run.stderr);
    assert.deepEqual(lastSeen()?.body, { key: { id: 'k-1' }, new_key: { id: 'k-2' }, project_id: 'p1', device: '/dev/loop3' });
    assert.match(run.stdout, /^keyslots +new key in slot 1, old key's slot 0 destroyed$/m);
    assert.match(run.stdout, /^luks +LUKS2, offline$/m);
    const missing = await cli(['rekey', 'volume-a', '--key-id', 'k-1', '--project', 'p1']);
    assert.deepEqual([missing.status, missing.stderr.includes('--new-key-id NEW is required')], [2, true]);
  });

  it('volume NAME prints which key opens each keyslot and where that is recorded', async () => {
    const shown = { ...volumeA, keyslots: [{ slot: 1, key_id: 'k-2', backend: 'barbican', project_id: 'p1' }], keyslots_from: 'token' };
    standIn.answer('GET', '/v1/volumes/volume-a', { json: shown });
    const run = await cli(['volume', 'volume-a']);
    assert.equal(run.status, 0, run.stderr);
    assert.match(run.stdout, /^keyslots +slot 1: key k-2 \(barbican, project p1\) \[LUKS2 token\]$/m);
  });
});

describe('portcullis ephemeral', () => {
  it('attach sends PUT /v1/ephemeral/INSTANCE/DISK with scope and device', async () => {
    const answer = { ...attachAnswer, name: 'ephemeral-i-1-disk0', key_scope: 'project', key_source: 'created' };
    standIn.answer('PUT', '/v1/ephemeral/i-1/disk0', { json: answer });
    const run = await cli(['ephemeral', 'attach', 'i-1', 'disk0', '--device', '/dev/vdb', '--project', 'p1', '--scope', 'project']);
    assert.equal(run.status, 0, run.stderr);
    assert.deepEqual(lastSeen()?.body, { device: '/dev/vdb', project_id: 'p1', key_scope: 'project' });
    assert.match(run.stdout, /^key_scope\s+project$/m);
  });

  it('detach sends no body; --erase sends ?erase=true with the project and key', async () => {
    standIn.answer('DELETE', '/v1/ephemeral/i-1/disk0', { json: { ...detachAnswer, name: 'ephemeral-i-1-disk0' } });
    const plain = await cli(['ephemeral', 'detach', 'i-1', 'disk0']);
    assert.equal(plain.status, 0, plain.stderr);
    assert.equal(lastSeen()?.body, undefined);
    standIn.answer('DELETE', '/v1/ephemeral/i-1/disk0?erase=true', { json: { ...detachAnswer, name: 'ephemeral-i-1-disk0', erased: true, key_deleted: true } });
    const erase = await cli(['ephemeral', 'detach', 'i-1', 'disk0', '--erase', '--project', 'p1', '--key-id', 'k-9']);
    assert.equal(erase.status, 0, erase.stderr);
    assert.deepEqual(lastSeen()?.body, { project_id: 'p1', key: { id: 'k-9' } });
    assert.equal(erase.stdout, 'ephemeral-i-1-disk0: closed; keyslots erased and key deleted: the data cannot be read again (210 ms)\n');
  });
});

describe('portcullis cache', () => {
  it('stats prints the figures with the hit ratio; --json adds hit_ratio to the daemon\'s figures', async () => {
    const run = await cli(['cache', 'stats']);
    assert.equal(run.status, 0, run.stderr);
    assert.match(run.stdout, /^hit ratio\s+97\.5% \(39 hits, 1 misses\)$/m);
    assert.deepEqual(JSON.parse((await cli(['cache', 'stats', '--json'])).stdout), { ...cacheFigures, hit_ratio: 0.975 });
  });

  it('flush sends DELETE /v1/cache and prints the count', async () => {
    standIn.answer('DELETE', '/v1/cache', { json: { flushed: 3 } });
    const run = await cli(['cache', 'flush']);
    assert.equal(run.status, 0, run.stderr);
    assert.equal(run.stdout, 'flushed 3 cached key(s)\n');
    assert.deepEqual(JSON.parse((await cli(['cache', 'flush', '--json'])).stdout), { flushed: 3 });
  });

  it('evict takes a UUID or a Barbican href and sends DELETE /v1/cache/UUID', async () => {
    const id = '2f0d8c2e-1c1a-4b8e-9d7e-6f3a1b2c3d4e';
    standIn.answer('DELETE', `/v1/cache/${id}`, { json: { evicted: 2 } });
    const run = await cli(['cache', 'evict', `https://barbican.example:9311/v1/secrets/${id}`]);
    assert.equal(run.status, 0, run.stderr);
    assert.equal(lastSeen()?.url, `/v1/cache/${id}`);
    assert.equal(run.stdout, `evicted 2 cache entries of key ${id}\n`);
  });

  it('a non-admin peer gets E_PEER_FORBIDDEN, exit 1', async () => {
    standIn.answer('DELETE', '/v1/cache', { status: 403, json: { error: { code: 'E_PEER_FORBIDDEN', message: 'uid 1000 holds role agent, but DELETE /v1/cache needs admin', details: { uid: 1000 } } } });
    try {
      const run = await cli(['cache', 'flush']);
      assert.equal(run.status, 1);
      assert.match(run.stderr, /^portcullis: E_PEER_FORBIDDEN: uid 1000 holds role agent/);
    } finally {
      standIn.answer('DELETE', '/v1/cache', { json: { flushed: 3 } });
    }
  });
});

describe('portcullis: which socket', () => {
  const yaml = (socket: string) => `socket:\n  path: ${socket}\nkey_manager:\n  backend: local\n`;

  it('uses socket.path of the --config file', async () => {
    const config = join(standIn.dir, 'portcullis.yaml');
    writeFileSync(config, yaml(standIn.socketPath));
    const run = await portcullis(['--config', config, 'volumes', '--json']);
    assert.equal(run.status, 0, run.stderr);
    assert.equal((JSON.parse(run.stdout) as unknown[]).length, 2);
  });

  it('uses socket.path of $PORTCULLIS_CONFIG, and names that origin when nothing is there', async () => {
    const config = join(standIn.dir, 'elsewhere.yaml');
    writeFileSync(config, yaml(join(standIn.dir, 'elsewhere.sock')));
    const run = await portcullis(['volumes'], { env: { PORTCULLIS_CONFIG: config } });
    assert.equal(run.status, 4, run.stderr);
    assert.match(run.stderr, /No daemon socket at .*elsewhere\.sock \(socket\.path in .*elsewhere\.yaml\)/);
  });

  it('--socket wins over the config', async () => {
    const config = join(standIn.dir, 'elsewhere.yaml');
    writeFileSync(config, yaml(join(standIn.dir, 'elsewhere.sock')));
    const run = await portcullis(['--config', config, '--socket', standIn.socketPath, 'health']);
    assert.equal(run.status, 0, run.stderr);
  });

  it('a named config that is missing or invalid is a config error (exit 3), not a silent fallback', async () => {
    const missing = await portcullis(['--config', join(standIn.dir, 'nope.yaml'), 'volumes']);
    assert.equal(missing.status, 3);
    assert.match(missing.stderr, /E_CONFIG_NOT_FOUND: .*--socket PATH/);
    const bad = join(standIn.dir, 'bad.yaml');
    writeFileSync(bad, 'socket:\n  pth: /x\n');
    const invalid = await portcullis(['--config', bad, 'volumes']);
    assert.equal(invalid.status, 3);
    assert.match(invalid.stderr, /socket\.pth: unknown key/);
  });

  it('with no config named and none at the default path, looks at /run/portcullis/portcullis.sock', async (t) => {
    if (existsSync('/etc/portcullis/portcullis.yaml') || existsSync('/run/portcullis/portcullis.sock')) {
      t.skip('this host has a portcullis config or daemon at the default paths');
      return;
    }
    const run = await portcullis(['volumes'], { env: { PORTCULLIS_CONFIG: undefined } });
    assert.equal(run.status, 4, run.stderr);
    assert.match(run.stderr, /No daemon socket at \/run\/portcullis\/portcullis\.sock \(the default; no config at \/etc\/portcullis\/portcullis\.yaml\)/);
  });
});
