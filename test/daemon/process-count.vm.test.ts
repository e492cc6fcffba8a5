/**
 * How many processes each operation spawns, and which privileged-helper
 * operations it asks for, counted by a runner between the daemon and the
 * kernel (commands and device operations both pass through it). Every
 * process costs 2–10 ms on hardware and 100–500 ms under TCG: with the
 * privileged helper on libcryptsetup (luks.via: helper, the default) no
 * operation spawns one. The helper round trips listed are the attach path's
 * budget: a test fails if one grows. Questions sysfs answers (identity,
 * mapping state) are the daemon's own and are not listed.
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
  // Once per daemon: whether dm-crypt has the no-workqueue flags (the helper's TARGETS). Paid here, outside the counts.
  const warm = await kernel.loopDevice(1);
  ok(await daemon.call('PUT', '/v1/volumes/pd-warm', { device: warm, provider: 'plain', key: { id: createKeyIn(daemon, 'tenant-a') }, project_id: 'tenant-a' }));
  ok(await daemon.call('DELETE', '/v1/volumes/pd-warm'));
});
after(() => kernel?.cleanup());

/** The commands one request spawned (by name) and the helper operations it asked for, in order. */
async function countsOf(request: () => Promise<unknown>): Promise<{ spawned: string[]; helper: string[] }> {
  const from = counter.commands.length;
  const opsFrom = counter.ops.length;
  await request();
  return {
    spawned: counter.commands.slice(from).map(commandName),
    helper: counter.ops.slice(opsFrom).filter((op) => op.startsWith('helper:')).map((op) => op.slice('helper:'.length)),
  };
}

for (const provider of ['luks', 'luks2'] as const) {
  describe(`${provider}: processes per operation`, () => {
    const name = `pd-count-${provider}`;
    let body: Record<string, unknown>;

    it('a first attach that formats spawns none; the helper probes, scans, formats and opens', async () => {
      body = { device: await kernel.loopDevice(32), provider, key: { id: createKeyIn(daemon, 'tenant-a') }, project_id: 'tenant-a', format: 'if-blank' };
      const counts = await countsOf(async () => assert.equal(ok<{ formatted: boolean }>(await daemon.call('PUT', `/v1/volumes/${name}`, body)).formatted, true));
      assert.deepEqual(counts, { spawned: [], helper: ['HEADER', 'HEADER', 'PROBE', 'SCAN_ZEROS', 'FORMAT', 'HEADER', 'OPEN', 'HEADER'] });
    });

    it('a detach spawns none: one CLOSE', async () => {
      assert.deepEqual(await countsOf(() => daemon.call('DELETE', `/v1/volumes/${name}`).then(ok)), { spawned: [], helper: ['CLOSE'] });
    });

    it('a re-attach with the key cached spawns none: the header, OPEN, the header', async () => {
      const counts = await countsOf(async () => assert.equal(ok<{ key_source: string; opened: boolean }>(await daemon.call('PUT', `/v1/volumes/${name}`, body)).key_source, 'cache'));
      assert.deepEqual(counts, { spawned: [], helper: ['HEADER', 'OPEN', 'HEADER'] });
    });

    it('the same attach again (idempotent) spawns none and opens nothing', async () => {
      const counts = await countsOf(async () => assert.equal(ok<{ opened: boolean }>(await daemon.call('PUT', `/v1/volumes/${name}`, body)).opened, false));
      assert.deepEqual(counts, { spawned: [], helper: ['HEADER', 'HEADER'] });
    });
  });
}

describe('plain: processes per operation', () => {
  it('an attach spawns none (the helper probes for any signature a plain mapping must not cover, then opens); a detach none', async () => {
    const body = { device: await kernel.loopDevice(1), provider: 'plain', key: { id: createKeyIn(daemon, 'tenant-a') }, project_id: 'tenant-a' };
    assert.deepEqual(await countsOf(() => daemon.call('PUT', '/v1/volumes/pd-count-plain', body).then(ok)), { spawned: [], helper: ['PROBE', 'OPEN'] });
    assert.deepEqual(await countsOf(() => daemon.call('DELETE', '/v1/volumes/pd-count-plain').then(ok)), { spawned: [], helper: ['CLOSE'] });
    assert.deepEqual(await countsOf(() => daemon.call('PUT', '/v1/volumes/pd-count-plain', body).then(ok)), { spawned: [], helper: ['PROBE', 'OPEN'] });
  });
});
