/**
 * portcullisd with keys from a real Barbican (started by the fixture) on a
 * real kernel: attach end to end, the cache under 64 concurrent attaches of
 * one tenant key, attaching through a Barbican outage, and ephemeral disks
 * (project- and instance-scoped keys, crypto-erase).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { barbicanBackend } from '../../src/keyclient/backends/barbican/backend.js';
import type { KeyManager } from '../../src/keyclient/key-manager.js';
import { plainAllocator } from '../../src/keyclient/secure-memory.js';
import { startBarbican, type BarbicanServer } from '../fixtures/barbican-server.js';
import type { DaemonProcess } from '../fixtures/daemon.js';
import { startInterposer } from '../fixtures/servers/fakes.js';
import { rejectsWithCode } from '../helpers/errors.js';
import { code, daemonKernel, ok, type DaemonKernel } from './vm-setup.js';

let kernel: DaemonKernel;
let barbican: BarbicanServer;
let tap: Awaited<ReturnType<typeof startInterposer>>;
let direct: KeyManager;
let daemon: DaemonProcess;

const newKey = (projectId: string) => direct.createKey({ projectId }, { algorithm: 'aes', length: 256 });
const payloadFetches = (id: string) => tap.exchanges.filter((e) => e.method === 'GET' && e.path.includes(`/secrets/${id}/payload`)).length;

before(async () => {
  [kernel, barbican] = await Promise.all([daemonKernel(), startBarbican({ pipeline: 'noauth' })]);
  // A recording pass-through proxy in front of Barbican: every request the daemon makes is counted.
  tap = await startInterposer(barbican.url);
  direct = await barbicanBackend.create(barbicanBackend.optionsSchema.parse({ endpoint: barbican.url }), { allocator: plainAllocator() });
  daemon = await kernel.daemon({
    config: {
      key_manager: { backend: 'barbican', barbican: { endpoint: tap.url, timeout: 10, auth: { type: 'none' } } },
      retry: { attempts: 2, base_delay_seconds: 0.1 },
      limits: { max_concurrent_commands: 8 },
      log: { format: 'json' },
    },
  });
});
after(async () => {
  await kernel?.cleanup();
  await direct?.close();
  await tap?.stop();
  await barbican?.stop();
});

describe('volumes with Barbican keys', () => {
  it('luks2: attach → write → detach → reattach → verify, the key fetched from Barbican once', async () => {
    const dev = await kernel.loopDevice(32);
    const key = await newKey('tenant-x');
    const body = { device: dev, provider: 'Luks2Encryptor', key: { id: `${barbican.url}/v1/secrets/${key}`, backend: 'barbican' }, project_id: 'tenant-x', format: 'if-blank' };
    const first = ok<{ key_source: string; provider: string; formatted: boolean }>(await daemon.call('PUT', '/v1/volumes/pd-barbican', body));
    assert.deepEqual([first.key_source, first.provider, first.formatted], ['backend', 'luks2', true]);
    await kernel.sh('yes barbican-data | head -c 2097152 | dd of=/dev/mapper/pd-barbican bs=1M conv=fsync status=none');
    const written = await kernel.sha('/dev/mapper/pd-barbican', 2097152);
    ok(await daemon.call('DELETE', '/v1/volumes/pd-barbican'));
    const again = ok<{ key_source: string }>(await daemon.call('PUT', '/v1/volumes/pd-barbican', body));
    assert.equal(again.key_source, 'cache');
    assert.equal(await kernel.sha('/dev/mapper/pd-barbican', 2097152), written);
    assert.equal(payloadFetches(key), 1);
    ok(await daemon.call('DELETE', '/v1/volumes/pd-barbican'));
  });

  it('64 concurrent attaches of volumes sharing one key make exactly one backend fetch', async () => {
    const devs = await kernel.loopDevices(64, 1);
    const key = await newKey('tenant-herd');
    const before = ok<{ backend_fetches: number }>(await daemon.call('GET', '/v1/cache')).backend_fetches;
    const answers = await Promise.all(devs.map((device, i) => daemon.call('PUT', `/v1/volumes/pd-herd-${i}`, { device, provider: 'plain', key: { id: key }, project_id: 'tenant-herd' })));
    for (const a of answers) ok(a);
    assert.equal(payloadFetches(key), 1, 'one payload GET reached Barbican');
    assert.equal(ok<{ backend_fetches: number }>(await daemon.call('GET', '/v1/cache')).backend_fetches - before, 1);
    const sources = answers.map((a) => (a.body as { key_source: string }).key_source);
    assert.equal(sources.filter((s) => s === 'backend').length, 1, 'one attach fetched the key');
    assert.equal(sources.filter((s) => s === 'coalesced' || s === 'cache').length, 63, 'the others joined that fetch or found its result cached');
    const listed = ok<{ volumes: Array<{ name: string }> }>(await daemon.call('GET', '/v1/volumes')).volumes.filter((v) => v.name.startsWith('pd-herd-'));
    assert.equal(listed.length, 64);
    const closed = await Promise.all(devs.map((_, i) => daemon.call('DELETE', `/v1/volumes/pd-herd-${i}`)));
    assert.equal(closed.filter((a) => (a.body as { closed?: boolean }).closed === true).length, 64);
  });

  it('with Barbican down, a cached key still attaches and an uncached one fails fast with 503 E_BACKEND_UNAVAILABLE', async () => {
    const [a, b] = [await kernel.loopDevice(4), await kernel.loopDevice(4)];
    const cached = await newKey('tenant-x');
    const uncached = await newKey('tenant-x');
    ok(await daemon.call('PUT', '/v1/volumes/pd-down-a', { device: a, provider: 'plain', key: { id: cached }, project_id: 'tenant-x' }));
    ok(await daemon.call('DELETE', '/v1/volumes/pd-down-a'));
    await barbican.kill();
    try {
      const again = ok<{ key_source: string }>(await daemon.call('PUT', '/v1/volumes/pd-down-a', { device: a, provider: 'plain', key: { id: cached }, project_id: 'tenant-x' }));
      assert.equal(again.key_source, 'cache');
      const down = await daemon.call('PUT', '/v1/volumes/pd-down-b', { device: b, provider: 'plain', key: { id: uncached }, project_id: 'tenant-x' });
      assert.equal(down.status, 503);
      assert.equal(code(down), 'E_BACKEND_UNAVAILABLE');
      assert.ok(Number(down.headers['retry-after']) > 0, 'Retry-After tells the agent when to come back');
      const health = ok<{ status: string; checks: Record<string, { ok: boolean }> }>(await daemon.call('GET', '/v1/health'));
      assert.equal(health.status, 'degraded');
      assert.equal(health.checks['key_manager']?.ok, false);
      await kernel.sh('! test -e /dev/mapper/pd-down-b');
    } finally {
      await barbican.restart();
    }
    ok(await daemon.call('DELETE', '/v1/volumes/pd-down-a'));
  });
});

describe('ephemeral disks', () => {
  it('project scope: two instances of one project share one key; another project is refused', async () => {
    const [d1, d2] = [await kernel.loopDevice(32), await kernel.loopDevice(32)];
    const first = ok<{ key_id: string; key_source: string; formatted: boolean; key_scope: string }>(
      await daemon.call('PUT', '/v1/ephemeral/pdi-1/disk0', { device: d1, key_scope: 'project', project_id: 'tenant-eph' }),
    );
    assert.equal(first.key_source, 'created');
    assert.equal(first.formatted, true);
    assert.equal(first.key_scope, 'project');
    const second = ok<{ key_id: string; formatted: boolean }>(await daemon.call('PUT', '/v1/ephemeral/pdi-2/disk0', { device: d2, key_scope: 'project', project_id: 'tenant-eph' }));
    assert.equal(second.key_id, first.key_id, 'the project key is found again by name');
    assert.equal(second.formatted, true);
    ok(await daemon.call('DELETE', '/v1/ephemeral/pdi-1/disk0'));
    const other = await daemon.call('PUT', '/v1/ephemeral/pdi-9/disk0', { device: d1, key_scope: 'project', project_id: 'tenant-other' });
    assert.equal(other.status, 404);
    assert.equal(code(other), 'E_KEY_NOT_FOUND');
    await kernel.sh('! test -e /dev/mapper/ephemeral-pdi-9-disk0');
    // The owner reattaches it: opened, not formatted again.
    const back = ok<{ formatted: boolean; key_id: string }>(await daemon.call('PUT', '/v1/ephemeral/pdi-1/disk0', { device: d1, key_scope: 'project', project_id: 'tenant-eph' }));
    assert.deepEqual([back.formatted, back.key_id], [false, first.key_id]);
    ok(await daemon.call('DELETE', '/v1/ephemeral/pdi-1/disk0'));
    ok(await daemon.call('DELETE', '/v1/ephemeral/pdi-2/disk0'));
  });

  it('instance scope: the key is created on first attach; erase wipes the keyslots and deletes it, so reattach fails with E_KEY_NOT_FOUND', async () => {
    const dev = await kernel.loopDevice(32);
    const first = ok<{ key_id: string; key_source: string }>(await daemon.call('PUT', '/v1/ephemeral/pdi-3/disk1', { device: dev, project_id: 'tenant-eph' }));
    assert.equal(first.key_source, 'created');
    await kernel.sh('echo secret-instance-data | dd of=/dev/mapper/ephemeral-pdi-3-disk1 conv=fsync status=none');
    const erased = ok<{ closed: boolean; erased: boolean; key_deleted: boolean }>(await daemon.call('DELETE', '/v1/ephemeral/pdi-3/disk1?erase=true', { project_id: 'tenant-eph' }));
    assert.deepEqual([erased.closed, erased.erased, erased.key_deleted], [true, true, true]);
    await kernel.sh(`cryptsetup luksDump ${dev} | grep -q 'Keyslots:' && ! cryptsetup luksDump ${dev} | grep -qE '^  [0-9]+: luks2'`);
    const again = await daemon.call('PUT', '/v1/ephemeral/pdi-3/disk1', { device: dev, project_id: 'tenant-eph', key: { id: first.key_id } });
    assert.equal(again.status, 404);
    assert.equal(code(again), 'E_KEY_NOT_FOUND');
    const byName = await daemon.call('PUT', '/v1/ephemeral/pdi-3/disk1', { device: dev, project_id: 'tenant-eph' });
    assert.equal(code(byName), 'E_KEY_NOT_FOUND', 'no fresh key for an erased disk');
    await rejectsWithCode(direct.get({ projectId: 'tenant-eph' }, first.key_id), 'E_KEY_NOT_FOUND');
  });
});
