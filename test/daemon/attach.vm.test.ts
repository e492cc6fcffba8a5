/**
 * portcullisd end to end on a real kernel: a small agent (this file) asks a
 * real daemon process over its socket to attach loop devices, writes through
 * the mapping, detaches, reattaches and verifies — for luks1, luks2 and plain,
 * with keys from the embedded local keystore. Then the refusals that keep
 * data safe, idempotency and a held mapping. (Resize, deferred detach,
 * symlinks, restart and keyslot upgrades are in volume-ops.vm.test.ts.)
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { DaemonProcess } from '../fixtures/daemon.js';
import { code, createKeyIn, daemonKernel, localKeystoreDaemon, ok, type DaemonKernel } from './vm-setup.js';

let kernel: DaemonKernel;
let daemon: DaemonProcess;
const createKey = (project: string, length = 512): string => createKeyIn(daemon, project, length);

interface Attached {
  mapper_path: string;
  device: string;
  provider: string;
  luks_uuid: string | null;
  size_bytes: number;
  key_source: string;
  opened: boolean;
  formatted: boolean;
}

before(async () => {
  kernel = await daemonKernel();
  daemon = await localKeystoreDaemon(kernel);
});
after(() => kernel?.cleanup());

for (const provider of ['luks', 'luks2', 'plain'] as const) {
  describe(`${provider}: attach → write → detach → reattach → verify`, () => {
    const name = `pd-${provider}`;
    let dev: string;
    let keyId: string;
    let first: Attached;
    const body = () => ({ device: dev, provider, key: { id: keyId }, project_id: 'tenant-a', format: 'if-blank' });

    it('the first attach formats the blank device (LUKS) and answers the mapping, key fetched from the backend', async () => {
      // LUKS2's default header takes 16 MiB.
      dev = await kernel.loopDevice(32);
      keyId = createKey('tenant-a');
      first = ok<Attached>(await daemon.call('PUT', `/v1/volumes/${name}`, body()));
      assert.equal(first.mapper_path, `/dev/mapper/${name}`);
      assert.equal(first.device, dev);
      assert.equal(first.key_source, 'backend');
      assert.equal(first.opened, true);
      assert.equal(first.formatted, provider !== 'plain');
      if (provider === 'plain') assert.equal(first.luks_uuid, null);
      else assert.match(first.luks_uuid ?? '', /^[0-9a-f-]{36}$/);
      assert.ok(first.size_bytes >= 16 * 1024 * 1024 && first.size_bytes <= 32 * 1024 * 1024, `size ${first.size_bytes}`);
      await kernel.sh(`test -b /dev/mapper/${name}`);
    });

    it('data written through the mapping survives detach and reattach (key now from the cache); the raw device holds only ciphertext', async () => {
      await kernel.sh(`yes portcullis-${provider}-data | head -c 4194304 > /tmp/${name}.pattern && dd if=/tmp/${name}.pattern of=/dev/mapper/${name} bs=1M conv=fsync status=none`);
      const written = await kernel.sha(`/dev/mapper/${name}`, 4194304);
      const detached = ok<{ closed: boolean; deferred: boolean }>(await daemon.call('DELETE', `/v1/volumes/${name}`));
      assert.equal(detached.closed, true);
      assert.equal(detached.deferred, false);
      await kernel.sh(`! test -e /dev/mapper/${name}`);
      const again = ok<Attached>(await daemon.call('PUT', `/v1/volumes/${name}`, body()));
      assert.equal(again.formatted, false, 'never formats twice');
      assert.equal(again.key_source, 'cache');
      assert.equal(again.luks_uuid, first.luks_uuid);
      assert.equal(await kernel.sha(`/dev/mapper/${name}`, 4194304), written);
      const raw = await kernel.sh(`grep -c portcullis-${provider}-data ${dev} || true`);
      assert.equal(raw, '0', 'no plaintext on the raw device');
    });

    it('the same attach again is idempotent: same mapping, opened false', async () => {
      const again = ok<Attached>(await daemon.call('PUT', `/v1/volumes/${name}`, body()));
      assert.equal(again.opened, false);
      assert.equal(again.mapper_path, `/dev/mapper/${name}`);
      const listed = ok<{ volumes: Array<{ name: string; device: string; origin: string; key_id: string }> }>(await daemon.call('GET', '/v1/volumes'));
      const mine = listed.volumes.filter((v) => v.name === name);
      assert.equal(mine.length, 1);
      assert.equal(mine[0]?.device, dev);
      assert.equal(mine[0]?.origin, 'attached');
      assert.equal(mine[0]?.key_id, keyId);
    });

    it('detach twice: the second answers closed false', async () => {
      assert.equal(ok<{ closed: boolean }>(await daemon.call('DELETE', `/v1/volumes/${name}`)).closed, true);
      assert.equal(ok<{ closed: boolean }>(await daemon.call('DELETE', `/v1/volumes/${name}`)).closed, false);
      assert.equal((await daemon.call('GET', `/v1/volumes/${name}`)).status, 404);
    });
  });
}

describe('refusals that keep data safe', () => {
  it('a device holding ext4 is refused for format with 422 E_DEVICE_NOT_BLANK naming the signature; content unchanged', async () => {
    const dev = await kernel.loopDevice(16);
    await kernel.sh(`mkfs.ext4 -q -F ${dev}`);
    const before = await kernel.sha(dev, 16 * 1024 * 1024);
    const answer = await daemon.call('PUT', '/v1/volumes/pd-ext4', { device: dev, provider: 'luks2', key: { id: createKey('tenant-a') }, project_id: 'tenant-a', format: 'if-blank' });
    assert.equal(answer.status, 422);
    assert.equal(code(answer), 'E_DEVICE_NOT_BLANK');
    assert.match(answer.text, /ext4/);
    assert.equal(await kernel.sha(dev, 16 * 1024 * 1024), before);
  });

  it('a blank device with format "never" is refused, not formatted', async () => {
    const dev = await kernel.loopDevice(8);
    const answer = await daemon.call('PUT', '/v1/volumes/pd-never', { device: dev, provider: 'luks', key: { id: createKey('tenant-a') }, project_id: 'tenant-a' });
    assert.equal(answer.status, 422);
    assert.equal(code(answer), 'E_DEVICE_WRONG');
    assert.match(answer.text, /format is \\"never\\"/);
    await kernel.sh(`! cryptsetup isLuks ${dev}`);
  });

  it('a bad request never touches the device', async () => {
    const dev = await kernel.loopDevice(8);
    await kernel.sh(`head -c 1048576 /dev/urandom > ${dev}`);
    const before = await kernel.sha(dev);
    const answer = await daemon.call('PUT', '/v1/volumes/pd-bad', { device: dev, provider: 'luks', key: { id: 'x' }, project_id: 'tenant-a', format: 'if-blank', key_size: 13 });
    assert.equal(answer.status, 400);
    assert.equal(await kernel.sha(dev), before);
  });

  it('a wrong key opens nothing (422 E_WRONG_KEY), and another tenant cannot use the key (404 E_KEY_NOT_FOUND)', async () => {
    const dev = await kernel.loopDevice(8);
    const right = createKey('tenant-a');
    ok(await daemon.call('PUT', '/v1/volumes/pd-wrong', { device: dev, provider: 'luks', key: { id: right }, project_id: 'tenant-a', format: 'if-blank' }));
    ok(await daemon.call('DELETE', '/v1/volumes/pd-wrong'));
    const wrong = await daemon.call('PUT', '/v1/volumes/pd-wrong', { device: dev, provider: 'luks', key: { id: createKey('tenant-a') }, project_id: 'tenant-a', format: 'if-blank' });
    assert.equal(wrong.status, 422);
    assert.equal(code(wrong), 'E_WRONG_KEY');
    await kernel.sh('! test -e /dev/mapper/pd-wrong');
    const foreign = await daemon.call('PUT', '/v1/volumes/pd-wrong', { device: dev, provider: 'luks', key: { id: right }, project_id: 'tenant-b' });
    assert.equal(foreign.status, 404);
    assert.equal(code(foreign), 'E_KEY_NOT_FOUND');
  });

  it('the same name for another device is 409 E_MAPPING_CONFLICT, and the first mapping stays', async () => {
    const [a, b] = [await kernel.loopDevice(8), await kernel.loopDevice(8)];
    const key = createKey('tenant-a');
    ok(await daemon.call('PUT', '/v1/volumes/pd-conflict', { device: a, provider: 'plain', key: { id: key }, project_id: 'tenant-a' }));
    const clash = await daemon.call('PUT', '/v1/volumes/pd-conflict', { device: b, provider: 'plain', key: { id: key }, project_id: 'tenant-a' });
    assert.equal(clash.status, 409);
    assert.equal(code(clash), 'E_MAPPING_CONFLICT');
    assert.equal(ok<{ device: string }>(await daemon.call('GET', '/v1/volumes/pd-conflict')).device, a);
  });

  it('a mounted mapping is not detached (409 E_VOLUME_BUSY naming 1 holder) until it is released', async () => {
    const dev = await kernel.loopDevice(32);
    ok(await daemon.call('PUT', '/v1/volumes/pd-busy', { device: dev, provider: 'luks2', key: { id: createKey('tenant-a') }, project_id: 'tenant-a', format: 'if-blank' }));
    await kernel.sh('mkfs.ext4 -q /dev/mapper/pd-busy && mkdir -p /tmp/pd-busy && mount /dev/mapper/pd-busy /tmp/pd-busy');
    const busy = await daemon.call('DELETE', '/v1/volumes/pd-busy');
    assert.equal(busy.status, 409);
    assert.equal(code(busy), 'E_VOLUME_BUSY');
    assert.equal((busy.body as { error: { details: { holders: number } } }).error.details.holders, 1);
    await kernel.sh('test -b /dev/mapper/pd-busy && umount /tmp/pd-busy');
    assert.equal(ok<{ closed: boolean }>(await daemon.call('DELETE', '/v1/volumes/pd-busy')).closed, true);
  });
});
