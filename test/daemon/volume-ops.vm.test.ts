/**
 * portcullisd on a real kernel, beyond attach and detach: resize, deferred
 * detach, os-brick's symlink, a kill -9 restart that adopts what it made,
 * and rewriting a slow os-brick keyslot. Keys from the embedded local keystore.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import type { DaemonProcess } from '../fixtures/daemon.js';
import { waitForMatch } from '../helpers/wait.js';
import { code, createKeyIn, daemonKernel, localKeystoreDaemon, ok, type DaemonKernel } from './vm-setup.js';

const cli = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

let kernel: DaemonKernel;
let daemon: DaemonProcess;
const createKey = (project: string, length = 512): string => createKeyIn(daemon, project, length);

before(async () => {
  kernel = await daemonKernel();
  daemon = await localKeystoreDaemon(kernel);
});
after(() => kernel?.cleanup());

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
