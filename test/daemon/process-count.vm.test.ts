/**
 * How many processes each operation spawns, counted by a runner between the
 * daemon and the kernel (commands and device operations both pass through
 * it). Every process costs 2–10 ms on hardware and 100–500 ms under TCG, so
 * these lists are the attach path's budget: a test fails if one grows.
 * Device questions (identity, LUKS header, mapping state, blank check) are
 * answered in-process by the device operations and spawn nothing.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { DaemonProcess } from '../fixtures/daemon.js';
import { commandName, countingRunner, type CountingRunner } from '../helpers/counting-runner.js';
import { createKeyIn, daemonKernel, localKeystoreDaemon, ok, type DaemonKernel } from './vm-setup.js';

let kernel: DaemonKernel;
let daemon: DaemonProcess;
let counter: CountingRunner;

before(async () => {
  kernel = await daemonKernel();
  counter = countingRunner(kernel.runner);
  daemon = await localKeystoreDaemon(kernel, counter);
  // Once per daemon: whether cryptsetup and dm-crypt have the no-workqueue flags. Paid here, outside the counts.
  const warm = await kernel.loopDevice(1);
  ok(await daemon.call('PUT', '/v1/volumes/pd-warm', { device: warm, provider: 'plain', key: { id: createKeyIn(daemon, 'tenant-a') }, project_id: 'tenant-a' }));
  ok(await daemon.call('DELETE', '/v1/volumes/pd-warm'));
});
after(() => kernel?.cleanup());

/** The commands one request spawned, by name. */
async function spawnedBy(request: () => Promise<unknown>): Promise<string[]> {
  const from = counter.commands.length;
  await request();
  return counter.commands.slice(from).map(commandName);
}

for (const provider of ['luks', 'luks2'] as const) {
  describe(`${provider}: processes per operation`, () => {
    const name = `pd-count-${provider}`;
    let body: Record<string, unknown>;

    it('a first attach that formats spawns three: blkid -p, luksFormat, luksOpen', async () => {
      body = { device: await kernel.loopDevice(32), provider, key: { id: createKeyIn(daemon, 'tenant-a') }, project_id: 'tenant-a', format: 'if-blank' };
      const spawned = await spawnedBy(async () => assert.equal(ok<{ formatted: boolean }>(await daemon.call('PUT', `/v1/volumes/${name}`, body)).formatted, true));
      assert.deepEqual(spawned, ['blkid -p', 'cryptsetup luksFormat', 'cryptsetup luksOpen']);
    });

    it('a detach spawns one: cryptsetup close', async () => {
      assert.deepEqual(await spawnedBy(() => daemon.call('DELETE', `/v1/volumes/${name}`).then(ok)), ['cryptsetup close']);
    });

    it('a re-attach with the key cached spawns one: cryptsetup luksOpen', async () => {
      const spawned = await spawnedBy(async () => assert.equal(ok<{ key_source: string; opened: boolean }>(await daemon.call('PUT', `/v1/volumes/${name}`, body)).key_source, 'cache'));
      assert.deepEqual(spawned, ['cryptsetup luksOpen']);
    });

    it('the same attach again (idempotent) spawns none', async () => {
      const spawned = await spawnedBy(async () => assert.equal(ok<{ opened: boolean }>(await daemon.call('PUT', `/v1/volumes/${name}`, body)).opened, false));
      assert.deepEqual(spawned, []);
    });
  });
}

describe('plain: processes per operation', () => {
  it('an attach spawns two (blkid -p, which alone knows every signature a plain mapping must not cover, and cryptsetup create); a detach one', async () => {
    const body = { device: await kernel.loopDevice(1), provider: 'plain', key: { id: createKeyIn(daemon, 'tenant-a') }, project_id: 'tenant-a' };
    assert.deepEqual(await spawnedBy(() => daemon.call('PUT', '/v1/volumes/pd-count-plain', body).then(ok)), ['blkid -p', 'cryptsetup create']);
    assert.deepEqual(await spawnedBy(() => daemon.call('DELETE', '/v1/volumes/pd-count-plain').then(ok)), ['cryptsetup close']);
    assert.deepEqual(await spawnedBy(() => daemon.call('PUT', '/v1/volumes/pd-count-plain', body).then(ok)), ['blkid -p', 'cryptsetup create']);
  });
});
