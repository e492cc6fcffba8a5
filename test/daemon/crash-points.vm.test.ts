/**
 * The daemon SIGKILLed at each step of attach, detach and erase (armed by
 * PORTCULLIS_TEST_KILL_AT, src/daemon/service/kill-point.ts), restarted on
 * the same keystore and runtime directory, and the agent's request retried:
 * the state converges — the mapping present once and adopted, or absent —
 * and data written before the kill reads back.
 */
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { DaemonProcess } from '../fixtures/daemon.js';
import { KILL_ENV, type KillStep } from '../../src/daemon/service/kill-point.js';
import { createKeyIn, daemonKernel, ok, type DaemonKernel } from './vm-setup.js';

let kernel: DaemonKernel;
const dir = mkdtempSync(join(tmpdir(), 'portcullisd-crash-'));
const config = { key_manager: { backend: 'local', local: { path: `${dir}/keystore.db`, kek_file: `${dir}/kek` } }, log: { format: 'json' } };
let daemon: DaemonProcess;

before(async () => {
  kernel = await daemonKernel();
  daemon = await kernel.daemon({ dir, config });
});
after(() => kernel?.cleanup());

/** Restarts the daemon armed for `step`, sends `request`, and checks the daemon died of it without answering. */
async function killedAt(step: KillStep, request: (d: DaemonProcess) => Promise<unknown>): Promise<void> {
  await daemon.stop();
  const armed = await kernel.daemon({ dir, config, env: { [KILL_ENV]: step } });
  const outcome = await request(armed).then(
    (answer) => `answered ${JSON.stringify(answer)}`,
    () => 'no answer',
  );
  assert.equal(outcome, 'no answer', `${step}: the request must die with the daemon`);
  assert.equal(await armed.exited, null, `${step}: killed by a signal, not an exit`);
  daemon = await kernel.daemon({ dir, config });
}

/** How many dm devices of this name the kernel has (never more than one). */
const mappings = async (name: string) => Number(await kernel.sh(`dmsetup ls | cut -f1 | grep -c -x ${name} || true`));
const write = (name: string, tag: string) => kernel.sh(`yes ${tag} | head -c 1048576 | dd of=/dev/mapper/${name} bs=1M conv=fsync status=none && head -c 1048576 /dev/mapper/${name} | sha256sum | cut -d' ' -f1`);
const readBack = (name: string) => kernel.sh(`head -c 1048576 /dev/mapper/${name} | sha256sum | cut -d' ' -f1`);

describe('attach killed at each step, then retried', () => {
  for (const step of ['attach:key-fetched', 'attach:recorded', 'attach:formatted', 'attach:opened'] as const) {
    it(`${step}: the retry succeeds, never formats twice, the mapping exists once and is the agent's own`, async () => {
      const name = `pd-crash-${step.split(':')[1]}`;
      const device = await kernel.loopDevice(32);
      const body = { device, provider: 'luks2', key: { id: createKeyIn(daemon, 'tenant-a') }, project_id: 'tenant-a', format: 'if-blank' };
      await killedAt(step, (d) => d.call('PUT', `/v1/volumes/${name}`, body));
      const retry = ok<{ opened: boolean; formatted: boolean }>(await daemon.call('PUT', `/v1/volumes/${name}`, body));
      // Killed after the format: the retry finds a header and opens it, no second format.
      if (step === 'attach:formatted' || step === 'attach:opened') assert.equal(retry.formatted, false, 'a header written before the kill is never formatted again');
      assert.equal(await mappings(name), 1);
      const listed = ok<{ origin: string; project_id: string }>(await daemon.call('GET', `/v1/volumes/${name}`));
      assert.deepEqual([listed.origin, listed.project_id], [step === 'attach:opened' ? 'adopted' : 'attached', 'tenant-a']);
      const written = await write(name, step);
      ok(await daemon.call('DELETE', `/v1/volumes/${name}`));
      ok(await daemon.call('PUT', `/v1/volumes/${name}`, body));
      assert.equal(await readBack(name), written);
      ok(await daemon.call('DELETE', `/v1/volumes/${name}`));
    });
  }
});

describe('detach killed after the close, then retried', () => {
  it('detach:closed: the retry answers closed false, the record is gone, and the data reads back on the next attach', async () => {
    const name = 'pd-crash-detach';
    const body = { device: await kernel.loopDevice(32), provider: 'luks2', key: { id: createKeyIn(daemon, 'tenant-a') }, project_id: 'tenant-a', format: 'if-blank' };
    ok(await daemon.call('PUT', `/v1/volumes/${name}`, body));
    const written = await write(name, 'detach');
    await killedAt('detach:closed', (d) => d.call('DELETE', `/v1/volumes/${name}`));
    assert.equal(await mappings(name), 0);
    assert.equal(ok<{ closed: boolean }>(await daemon.call('DELETE', `/v1/volumes/${name}`)).closed, false);
    assert.equal((await daemon.call('GET', `/v1/volumes/${name}`)).status, 404);
    ok(await daemon.call('PUT', `/v1/volumes/${name}`, body));
    assert.equal(await readBack(name), written);
    ok(await daemon.call('DELETE', `/v1/volumes/${name}`));
  });
});

describe('erase killed at each step, then retried', () => {
  for (const step of ['erase:closed', 'erase:erased', 'erase:key-deleted'] as const) {
    it(`${step}: the retried erase completes: no mapping, no keyslot, no key`, async () => {
      const instance = `pd-crash-${step.split(':')[1]}`;
      const path = `/v1/ephemeral/${instance}/disk0`;
      const device = await kernel.loopDevice(32);
      ok(await daemon.call('PUT', path, { device, provider: 'luks2', project_id: 'tenant-a', key_scope: 'instance' }));
      const mapping = `ephemeral-${instance}-disk0`;
      await killedAt(step, (d) => d.call('DELETE', `${path}?erase=true`, { project_id: 'tenant-a' }));
      const erased = ok<{ erased: boolean; key_deleted: boolean }>(await daemon.call('DELETE', `${path}?erase=true`, { project_id: 'tenant-a' }));
      assert.equal(erased.key_deleted, true);
      assert.equal(await mappings(mapping), 0);
      // luksDump's own exit is checked: a failed dump prints no keyslot either, and must not pass for an erased one.
      await kernel.sh(`dump="$(cryptsetup luksDump ${device})" && test "$(printf '%s\\n' "$dump" | grep -c -E '^  [0-9]+: luks2')" = 0`);
      const again = await daemon.call('PUT', path, { device, provider: 'luks2', project_id: 'tenant-a', key_scope: 'instance' });
      assert.equal(again.status, 404, `the disk's key is gone for good: ${again.text}`);
      assert.equal(await mappings(mapping), 0);
    });
  }
});
