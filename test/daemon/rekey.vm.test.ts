/**
 * Key rotation on a real kernel through a real portcullisd and its
 * privileged helper (libcryptsetup): online (the mapping stays open, the
 * data stays readable), offline by device, LUKS1 and LUKS2, what is refused,
 * and the daemon SIGKILLed between the rekey's writes (armed by
 * PORTCULLIS_TEST_KILL_AT): after the restart the volume opens with the key
 * its header names, and the retried rekey converges. Each rekey's helper
 * round trips are pinned and its wall time printed (under TCG: indicative).
 * One volume carries the crash steps in turn (A→B, B→C, C→D) to keep the
 * formats, and so the file's time, few.
 */
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { after, before, describe, it } from 'node:test';
import type { DaemonProcess } from '../fixtures/daemon.js';
import { countingRunner, type CountingRunner } from '../helpers/counting-runner.js';
import { KILL_ENV, type KillStep } from '../../src/daemon/service/kill-point.js';
import type { RekeyAnswer, VolumeAnswer } from '../../src/api/wire.js';
import { code, createKeyIn, daemonKernel, ok, type DaemonKernel } from './vm-setup.js';

const dir = mkdtempSync(join(tmpdir(), 'portcullisd-rekey-'));
const config = { key_manager: { backend: 'local', local: { path: `${dir}/keystore.db`, kek_file: `${dir}/kek` } }, log: { format: 'json' } };
let kernel: DaemonKernel;
let counter: CountingRunner;
let daemon: DaemonProcess;

before(async () => {
  kernel = await daemonKernel();
  counter = countingRunner(kernel.runner);
  daemon = await kernel.daemon({ dir, config }, counter);
});
after(() => kernel?.cleanup());

const key = (project = 'tenant-a') => createKeyIn(daemon, project);
const body = (device: string, provider: string, keyId: string) => ({ device, provider, key: { id: keyId }, project_id: 'tenant-a', format: 'if-blank' });
const rekeyBody = (oldId: string, newId: string, device?: string) => ({ project_id: 'tenant-a', key: { id: oldId }, new_key: { id: newId }, ...(device === undefined ? {} : { device }) });
const write = (name: string) => kernel.sh(`yes rekey | head -c 1048576 | dd of=/dev/mapper/${name} bs=1M conv=fsync status=none && head -c 1048576 /dev/mapper/${name} | sha256sum | cut -d' ' -f1`);
const readBack = (name: string) => kernel.sh(`head -c 1048576 /dev/mapper/${name} | sha256sum | cut -d' ' -f1`);
const mapped = async (name: string) => Number(await kernel.sh(`dmsetup ls | cut -f1 | grep -c -x ${name} || true`));
/** The active keyslots as cryptsetup's own dump lists them (LUKS1 "Key Slot N: ENABLED", LUKS2 "  N: luks2"). */
const activeSlots = async (device: string) =>
  (await kernel.sh(`cryptsetup luksDump ${device} | sed -n -e 's/^Key Slot \\([0-7]\\): ENABLED$/\\1/p' -e 's/^  \\([0-9]*\\): luks2$/\\1/p'`)).split('\n').filter((l) => l !== '').map(Number);
/** Which key the LUKS2 portcullis token names per slot, as cryptsetup exports it. */
const tokenSlots = async (device: string) => {
  const json = await kernel.sh(`for id in $(seq 0 31); do cryptsetup token export --token-id $id ${device} 2>/dev/null; echo; done | grep '"type":"portcullis"' || true`);
  return Object.fromEntries(Object.entries((JSON.parse(json) as { slots: Record<string, { key_id: string }> }).slots).map(([s, v]) => [s, v.key_id]));
};

/** Rekeys through the API, counting the helper's round trips and the wall time. */
async function measured(name: string, b: Record<string, unknown>): Promise<{ answer: RekeyAnswer; helper: string[]; ms: number }> {
  const from = counter.ops.length;
  const spawnedFrom = counter.commands.length;
  const t = performance.now();
  const answer = ok<RekeyAnswer>(await daemon.call('POST', `/v1/volumes/${name}/rekey`, b));
  const ms = Math.round(performance.now() - t);
  const helper = counter.ops.slice(from).filter((op) => op.startsWith('helper:')).map((op) => op.slice('helper:'.length));
  assert.deepEqual(counter.commands.slice(spawnedFrom), [], 'a rekey spawns no process: the helper does it all');
  return { answer, helper, ms };
}

for (const provider of ['luks', 'luks2'] as const) {
  describe(`${provider}: rekey`, () => {
    const name = `pd-rekey-${provider}`;
    let device: string;
    const ids: string[] = [];
    let written: string;

    it('online: the mapping stays open and readable; only the new key\'s slot is left; the old key is refused', async (t) => {
      device = await kernel.loopDevice(32);
      ids.push(key(), key(), key());
      const [a = '', b = ''] = ids;
      ok(await daemon.call('PUT', `/v1/volumes/${name}`, body(device, provider, a)));
      written = await write(name);
      const { answer, helper, ms } = await measured(name, rekeyBody(a, b));
      t.diagnostic(`${provider} online rekey: 0 processes, ${helper.length} helper round trips (${helper.join(' ')}), ${ms} ms`);
      assert.deepEqual([answer.online, answer.changed, answer.slot, answer.removed_slot], [true, true, 1, 0]);
      // One slot, so the new key cannot already open it: no KEY_TEST of it before the add.
      assert.deepEqual(helper, ['HEADER', 'KEY_TEST', 'KEY_ADD', 'KEY_TEST', ...(provider === 'luks2' ? ['TOKEN_SET'] : []), 'KEY_REMOVE']);
      assert.equal(await mapped(name), 1);
      assert.equal(await readBack(name), written, 'the mapping kept reading the same data');
      assert.deepEqual(await activeSlots(device), [1], 'the old key\'s slot 0 is gone');
      const shown = ok<VolumeAnswer>(await daemon.call('GET', `/v1/volumes/${name}`));
      assert.deepEqual([shown.key_id, shown.keyslots_from, shown.keyslots?.map((k) => [k.slot, k.key_id])], [b, provider === 'luks2' ? 'token' : 'record', [[1, b]]]);
      if (provider === 'luks2') assert.deepEqual(await tokenSlots(device), { '1': b });
      ok(await daemon.call('DELETE', `/v1/volumes/${name}`));
      const old = await daemon.call('PUT', `/v1/volumes/${name}`, body(device, provider, a));
      assert.equal(code(old), provider === 'luks2' ? 'E_VOLUME_KEY_MISMATCH' : 'E_WRONG_KEY', old.text);
      assert.equal(await mapped(name), 0);
    });

    it('offline with the device: then the newest key attaches and the data reads back', async (t) => {
      const [, b = '', c = ''] = ids;
      const { answer, helper, ms } = await measured(name, rekeyBody(b, c, device));
      t.diagnostic(`${provider} offline rekey: 0 processes, ${helper.length} helper round trips (${helper.join(' ')}), ${ms} ms`);
      assert.deepEqual([answer.online, answer.changed, answer.slot, answer.removed_slot], [false, true, 0, 1]);
      ok(await daemon.call('PUT', `/v1/volumes/${name}`, body(device, provider, c)));
      assert.equal(await readBack(name), written);
      ok(await daemon.call('DELETE', `/v1/volumes/${name}`));
    });
  });
}

describe('refusals change nothing', () => {
  it('wrong current key, another project, a foreign mapping, a plain volume', async () => {
    const [luks1, plain, foreignDev] = await kernel.loopDevices(3, 32);
    const [a, b, x] = [key(), key(), key()];
    ok(await daemon.call('PUT', '/v1/volumes/pd-ref-1', body(luks1 ?? '', 'luks', a)));
    ok(await daemon.call('DELETE', '/v1/volumes/pd-ref-1'));
    const dump = await kernel.sh(`cryptsetup luksDump ${luks1}`);
    const wrong = await daemon.call('POST', '/v1/volumes/pd-ref-1/rekey', rekeyBody(x, b, luks1));
    assert.deepEqual([wrong.status, code(wrong)], [422, 'E_WRONG_KEY']);
    assert.equal(await kernel.sh(`cryptsetup luksDump ${luks1}`), dump, 'the header is as it was');
    ok(await daemon.call('PUT', '/v1/volumes/pd-ref-1', body(luks1 ?? '', 'luks', a)));
    const project = await daemon.call('POST', '/v1/volumes/pd-ref-1/rekey', { ...rekeyBody(a, b), project_id: 'tenant-b' });
    assert.deepEqual([project.status, code(project)], [409, 'E_MAPPING_CONFLICT']);
    ok(await daemon.call('PUT', '/v1/volumes/pd-ref-plain', { ...body(plain ?? '', 'plain', a), format: 'never' }));
    const plainAnswer = await daemon.call('POST', '/v1/volumes/pd-ref-plain/rekey', rekeyBody(a, b));
    assert.deepEqual([plainAnswer.status, code(plainAnswer)], [422, 'E_REKEY_UNSUPPORTED']);
    await kernel.sh(`cryptsetup open --type plain --cipher aes-xts-plain64 --key-size 256 --key-file /dev/urandom --keyfile-size 32 ${foreignDev} pd-ref-foreign`);
    const foreign = await daemon.call('POST', '/v1/volumes/pd-ref-foreign/rekey', rekeyBody(a, b));
    assert.deepEqual([foreign.status, code(foreign)], [409, 'E_MAPPING_FOREIGN']);
    assert.equal(await kernel.sh(`cryptsetup luksDump ${luks1}`), dump, 'the header is still as it was');
    await kernel.sh('cryptsetup close pd-ref-foreign');
  });
});

describe('rekey killed between its writes, then retried', () => {
  const name = 'pd-rekey-crash';
  let device: string;
  let written: string;
  const ids: string[] = [];

  /** Restarts the daemon armed for `step`, sends the rekey, checks it died of it, and starts a plain one again. */
  async function killedAt(step: KillStep, b: Record<string, unknown>): Promise<void> {
    await daemon.stop();
    const armed = await kernel.daemon({ dir, config, env: { [KILL_ENV]: step } }, counter);
    const outcome = await armed.call('POST', `/v1/volumes/${name}/rekey`, b).then((answer) => `answered ${answer.status} ${answer.text}`, () => 'no answer');
    assert.equal(outcome, 'no answer', `${step}: the request must die with the daemon`);
    assert.equal(await armed.exited, null, `${step}: killed by a signal`);
    daemon = await kernel.daemon({ dir, config }, counter);
  }

  before(async () => {
    device = await kernel.loopDevice(32);
    ids.push(key(), key(), key(), key());
    ok(await daemon.call('PUT', `/v1/volumes/${name}`, body(device, 'luks2', ids[0] ?? '')));
    written = await write(name);
  });

  const steps: Array<{ step: KillStep; opensWith: 'old' | 'new'; slotsAfterKill: number; retryChanges: boolean }> = [
    { step: 'rekey:slot-added', opensWith: 'old', slotsAfterKill: 2, retryChanges: true },
    { step: 'rekey:recorded', opensWith: 'new', slotsAfterKill: 2, retryChanges: true },
    { step: 'rekey:slot-removed', opensWith: 'new', slotsAfterKill: 1, retryChanges: false },
  ];
  steps.forEach(({ step, opensWith, slotsAfterKill, retryChanges }, i) => {
    it(`${step}: the restarted daemon adopts the mapping, the volume opens with the ${opensWith} key, and the retry converges`, async () => {
      const [oldId = '', newId = ''] = [ids[i], ids[i + 1]];
      await killedAt(step, rekeyBody(oldId, newId));
      assert.equal(ok<VolumeAnswer>(await daemon.call('GET', `/v1/volumes/${name}`)).origin, 'adopted');
      assert.equal((await activeSlots(device)).length, slotsAfterKill);
      // Never neither: the key the header's token names opens it (detach, attach again), with the data.
      ok(await daemon.call('DELETE', `/v1/volumes/${name}`));
      ok(await daemon.call('PUT', `/v1/volumes/${name}`, body(device, 'luks2', opensWith === 'old' ? oldId : newId)));
      assert.equal(await readBack(name), written);
      const retry = ok<RekeyAnswer>(await daemon.call('POST', `/v1/volumes/${name}/rekey`, rekeyBody(oldId, newId)));
      assert.equal(retry.changed, retryChanges);
      const slots = await activeSlots(device);
      assert.deepEqual(slots, [retry.slot], 'one slot left, the new key\'s');
      assert.deepEqual(await tokenSlots(device), { [String(retry.slot)]: newId });
      ok(await daemon.call('DELETE', `/v1/volumes/${name}`));
      ok(await daemon.call('PUT', `/v1/volumes/${name}`, body(device, 'luks2', newId)));
      assert.equal(await readBack(name), written);
    });
  });
});
