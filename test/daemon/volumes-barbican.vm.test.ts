/**
 * portcullisd with keys from a real Barbican (started by the fixture) on a
 * real kernel: attach end to end, the cache under 64 concurrent attaches of
 * one tenant key, and attaching through a Barbican outage.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { KeyManager } from '../../src/keyclient/key-manager.js';
import type { BarbicanServer } from '../fixtures/barbican-server.js';
import type { DaemonProcess } from '../fixtures/daemon.js';
import { startBarbicanDaemon, type BarbicanDaemon } from './barbican-daemon.js';
import { code, ok, type DaemonKernel } from './vm-setup.js';

let env: BarbicanDaemon;
let kernel: DaemonKernel;
let barbican: BarbicanServer;
let daemon: DaemonProcess;
let direct: KeyManager;
const newKey = (projectId: string) => env.newKey(projectId);
const payloadFetches = (id: string) => env.payloadFetches(id);

before(async () => {
  env = await startBarbicanDaemon();
  ({ kernel, barbican, daemon, direct } = env);
});
after(() => env?.stop());

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
