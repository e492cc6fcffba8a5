/**
 * portcullisd end to end on a real kernel: a small agent (this file) asks a
 * real daemon process over its socket to attach loop devices, writes through
 * the mapping, detaches, reattaches and verifies — for luks1, luks2 and plain,
 * with keys from the embedded local keystore. Then the refusals that keep
 * data safe, idempotency, a held mapping, and a kill -9 restart.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import type { DaemonProcess } from '../fixtures/daemon.js';
import { code, daemonKernel, ok, type DaemonKernel } from './vm-setup.js';
import { waitForMatch } from '../helpers/wait.js';

const cli = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
let kernel: DaemonKernel;
let daemon: DaemonProcess;


/** A key in the daemon's own keystore, created the way an operator would: with the CLI. */
function createKey(project: string, length = 512): string {
  const run = spawnSync(process.execPath, [cli, '--config', daemon.configPath, 'key', 'create', '--project', project, '--length', String(length)], { encoding: 'utf8' });
  assert.equal(run.status, 0, run.stderr);
  return run.stdout.trim();
}

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
  const dir = mkdtempSync(join(tmpdir(), 'portcullisd-e2e-'));
  daemon = await kernel.daemon({
    dir,
    config: {
      key_manager: { backend: 'local', local: { path: `${dir}/keystore.db`, kek_file: `${dir}/kek` } },
      log: { format: 'json', level: 'debug', audit_file: `${dir}/audit.log` },
    },
  });
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

describe('resize, deferred detach, symlinks', () => {
  it('POST /v1/volumes/NAME/resize grows the mapping after the backing device grew', async () => {
    const dev = await kernel.loopDevice(32);
    const key = createKey('tenant-a');
    const first = ok<{ size_bytes: number }>(await daemon.call('PUT', '/v1/volumes/pd-grow', { device: dev, provider: 'luks2', key: { id: key }, project_id: 'tenant-a', format: 'if-blank' }));
    const file = await kernel.sh(`losetup --noheadings -O BACK-FILE ${dev}`);
    await kernel.sh(`truncate -s 48M ${file} && losetup -c ${dev}`);
    const grown = ok<{ size_bytes: number }>(await daemon.call('POST', '/v1/volumes/pd-grow/resize', { key: { id: key }, project_id: 'tenant-a' }));
    assert.equal(grown.size_bytes - first.size_bytes, 16 * 1024 * 1024);
    const missing = await daemon.call('POST', '/v1/volumes/pd-nothing/resize', { key: { id: key }, project_id: 'tenant-a' });
    assert.equal(code(missing), 'E_VOLUME_NOT_FOUND');
    ok(await daemon.call('DELETE', '/v1/volumes/pd-grow'));
  });

  it('?deferred=true on a held mapping answers deferred, and the kernel removes it once released', async () => {
    const dev = await kernel.loopDevice(8);
    ok(await daemon.call('PUT', '/v1/volumes/pd-deferred', { device: dev, provider: 'plain', key: { id: createKey('tenant-a') }, project_id: 'tenant-a' }));
    await kernel.sh('mkfs.ext4 -q /dev/mapper/pd-deferred && mkdir -p /tmp/pd-deferred && mount /dev/mapper/pd-deferred /tmp/pd-deferred');
    const answer = ok<{ closed: boolean; deferred: boolean }>(await daemon.call('DELETE', '/v1/volumes/pd-deferred?deferred=true'));
    assert.deepEqual([answer.closed, answer.deferred], [true, true]);
    // Still there while held: the kernel removes it when the last holder lets go.
    await kernel.sh('dmsetup info pd-deferred >/dev/null && umount /tmp/pd-deferred');
    await kernel.sh('! dmsetup info pd-deferred >/dev/null 2>&1');
    // Its record goes with it: the daemon counts no volume the kernel no longer has.
    const own = ok<{ volumes: Array<{ name: string; origin: string }> }>(await daemon.call('GET', '/v1/volumes')).volumes.filter((v) => v.origin !== 'foreign');
    assert.ok(!own.some((v) => v.name === 'pd-deferred'));
    assert.equal(ok<{ volumes: number }>(await daemon.call('GET', '/v1/health')).volumes, own.length, 'health counts only live mappings');
  });

  it('symlink: true points the attachment symlink at the mapping, and attaching through it again is idempotent', async () => {
    const dev = await kernel.loopDevice(8);
    const link = `/dev/pd-link-${dev.split('/').pop() ?? 'x'}`;
    await kernel.sh(`ln -sf ${dev} ${link}`);
    const body = { device: link, provider: 'plain', key: { id: createKey('tenant-a') }, project_id: 'tenant-a', symlink: true };
    const first = ok<{ device: string; opened: boolean }>(await daemon.call('PUT', '/v1/volumes/pd-symlink', body));
    assert.deepEqual([first.device, first.opened], [dev, true]);
    assert.equal(await kernel.sh(`readlink ${link}`), '/dev/mapper/pd-symlink');
    const again = ok<{ device: string; opened: boolean }>(await daemon.call('PUT', '/v1/volumes/pd-symlink', body));
    assert.deepEqual([again.device, again.opened], [dev, false]);
    ok(await daemon.call('DELETE', '/v1/volumes/pd-symlink'));
    await kernel.sh(`rm -f ${link}`);
  });
});

describe('restart', () => {
  it('after kill -9 with mappings open, a new daemon adopts them: listed once, with their project and key, detachable', async () => {
    const devs = [await kernel.loopDevice(8), await kernel.loopDevice(8)];
    const key = createKey('tenant-a');
    for (const [i, dev] of devs.entries()) ok(await daemon.call('PUT', `/v1/volumes/pd-restart-${i}`, { device: dev, provider: 'plain', key: { id: key }, project_id: 'tenant-a' }));
    const before = ok<{ volumes: Array<{ name: string }> }>(await daemon.call('GET', '/v1/volumes')).volumes.map((v) => v.name).sort();
    daemon.child.kill('SIGKILL');
    await daemon.exited;
    const config = { key_manager: { backend: 'local', local: { path: `${daemon.dir}/keystore.db`, kek_file: `${daemon.dir}/kek` } }, log: { format: 'json' } };
    daemon = await kernel.daemon({ dir: daemon.dir, config });
    assert.match(daemon.log(), /replaced a stale socket/);
    const adopted = ok<{ volumes: Array<{ name: string; origin: string; project_id: string | null; key_id: string | null }> }>(await daemon.call('GET', '/v1/volumes'));
    assert.deepEqual(adopted.volumes.map((v) => v.name).sort(), before, 'nothing lost, nothing duplicated');
    const restarted = adopted.volumes.find((v) => v.name === 'pd-restart-0');
    assert.deepEqual([restarted?.origin, restarted?.project_id, restarted?.key_id], ['adopted', 'tenant-a', key], 'owner remembered in volumes.json beside the socket');
    // Attaching again after the restart is the idempotent answer, not a second mapping.
    const again = ok<{ opened: boolean }>(await daemon.call('PUT', '/v1/volumes/pd-restart-1', { device: devs[1], provider: 'plain', key: { id: key }, project_id: 'tenant-a' }));
    assert.equal(again.opened, false);
    for (const i of [0, 1]) assert.equal(ok<{ closed: boolean }>(await daemon.call('DELETE', `/v1/volumes/pd-restart-${i}`)).closed, true);
  });
});

describe('luks.upgrade_keyslots: volumes os-brick formatted with a slow PBKDF', () => {
  let dev: string;
  let keyId: string;
  let data: string;
  const body = () => ({ device: dev, provider: 'luks', key: { id: keyId }, project_id: 'tenant-up' });
  const iterations = async () => (await kernel.sh(`cryptsetup luksDump ${dev} | grep -E '^Key Slot [0-7]: ENABLED' -A1 | grep -o 'Iterations:.*' | tr -s ' \t' ' '`)).split('\n');

  it('off (the default): the slow keyslot opens as it is and is left alone', async () => {
    dev = await kernel.loopDevice(16);
    keyId = createKey('tenant-up', 256);
    const hex = spawnSync(process.execPath, [cli, '--config', daemon.configPath, 'key', 'get', keyId, '--project', 'tenant-up'], { encoding: 'utf8' });
    assert.equal(hex.status, 0, hex.stderr);
    // os-brick's luksFormat line (hex passphrase on stdin), with a slow slot as cryptsetup's default would make.
    const format = await kernel.runner.run(['cryptsetup', '--batch-mode', 'luksFormat', '--type', 'luks1', '--key-file=-', '--pbkdf-force-iterations', '50000', dev], {
      stdin: Buffer.from(hex.stdout.trim()),
    });
    assert.equal(format.code, 0, format.stderr.toString());
    const first = ok<{ opened: boolean; keyslot_upgraded: boolean; mapper_path: string }>(await daemon.call('PUT', '/v1/volumes/pd-upgrade', body()));
    assert.deepEqual([first.opened, first.keyslot_upgraded], [true, false]);
    await kernel.sh(`head -c 1048576 /dev/urandom | dd of=${first.mapper_path} conv=fsync status=none`);
    data = await kernel.sha(first.mapper_path, 1048576);
    ok(await daemon.call('DELETE', '/v1/volumes/pd-upgrade'));
    assert.deepEqual(await iterations(), ['Iterations: 50000']);
  });

  it('on: the first attach rewrites the slot to pbkdf2/1000 and logs it; data intact; the next attach has nothing to do', async () => {
    await daemon.stop();
    const config = {
      key_manager: { backend: 'local', local: { path: `${daemon.dir}/keystore.db`, kek_file: `${daemon.dir}/kek` } },
      luks: { upgrade_keyslots: true },
      log: { format: 'json' },
    };
    daemon = await kernel.daemon({ dir: daemon.dir, config });
    const upgraded = ok<{ keyslot_upgraded: boolean; mapper_path: string }>(await daemon.call('PUT', '/v1/volumes/pd-upgrade', body()));
    assert.equal(upgraded.keyslot_upgraded, true);
    assert.equal(await kernel.sha(upgraded.mapper_path, 1048576), data);
    assert.deepEqual(await iterations(), ['Iterations: 1000']);
    await waitForMatch('the keyslot upgrade log line', () => daemon.log(), /"from":"pbkdf2 50000 iterations".*"message":"keyslot rewritten to the fast PBKDF".*"to":"pbkdf2 1000 iterations"/);
    ok(await daemon.call('DELETE', '/v1/volumes/pd-upgrade'));
    const again = ok<{ opened: boolean; keyslot_upgraded: boolean }>(await daemon.call('PUT', '/v1/volumes/pd-upgrade', body()));
    assert.deepEqual([again.opened, again.keyslot_upgraded], [true, false]);
    ok(await daemon.call('DELETE', '/v1/volumes/pd-upgrade'));
  });
});
