/**
 * The daemon touches only what it made, for whom it made it (docs/api.md,
 * "Ownership"): on a real kernel, a stale or misrouted request gets a clear
 * refusal and never another tenant's mapping, a destroyed header or a deleted
 * key; crypt mappings portcullis did not make are foreign and left alone.
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

const cli = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const NOBODY = 65534;
let kernel: DaemonKernel;
let daemon: DaemonProcess;
let dir: string;

function keyCli(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  return spawnSync(process.execPath, [cli, '--config', daemon.configPath, 'key', ...args], { encoding: 'utf8' });
}

function createKey(project: string): string {
  const run = keyCli('create', '--project', project, '--length', '512');
  assert.equal(run.status, 0, run.stderr);
  return run.stdout.trim();
}

const config = () => ({
  key_manager: { backend: 'local', local: { path: `${dir}/keystore.db`, kek_file: `${dir}/kek` } },
  // nobody is the agent here: what an agent sees differs from what an admin (root) sees.
  socket: { mode: '0666' },
  roles: { agent: { uids: [NOBODY] } },
  log: { format: 'json' },
});

/** The details of an error answer. */
const details = (answer: { body: unknown }) => (answer.body as { error: { details: Record<string, unknown> } }).error.details;

before(async () => {
  kernel = await daemonKernel();
  dir = mkdtempSync(join(tmpdir(), 'portcullisd-own-'));
  daemon = await kernel.daemon({ dir, config: config() });
});
after(() => kernel?.cleanup());

describe('an existing mapping answers an attach as idempotent only for the same project, key and options', () => {
  let dev: string;
  let keyA: string;
  const body = (over: Record<string, unknown> = {}) => ({ device: dev, provider: 'luks2', key: { id: keyA }, project_id: 'tenant-a', format: 'if-blank', ...over });

  before(async () => {
    dev = await kernel.loopDevice(32); // LUKS2's default header alone takes 16 MiB
    keyA = createKey('tenant-a');
    ok(await daemon.call('PUT', '/v1/volumes/pd-own', body()));
  });

  it('the same request again: 200, opened false', async () => {
    assert.equal(ok<{ opened: boolean }>(await daemon.call('PUT', '/v1/volumes/pd-own', body())).opened, false);
  });

  it("another project with its own key gets 409 E_MAPPING_CONFLICT naming project_id and key_id, and the mapping stays tenant-a's", async () => {
    const keyB = createKey('tenant-b');
    const answer = await daemon.call('PUT', '/v1/volumes/pd-own', body({ key: { id: keyB }, project_id: 'tenant-b' }));
    assert.equal(answer.status, 409, answer.text);
    assert.equal(code(answer), 'E_MAPPING_CONFLICT');
    assert.deepEqual(details(answer)['differs'], ['project_id', 'key_id']);
    const listed = ok<{ project_id: string; key_id: string }>(await daemon.call('GET', '/v1/volumes/pd-own'));
    assert.deepEqual([listed.project_id, listed.key_id], ['tenant-a', keyA]);
  });

  it('the same project with another key gets 409 naming key_id', async () => {
    const answer = await daemon.call('PUT', '/v1/volumes/pd-own', body({ key: { id: createKey('tenant-a') } }));
    assert.equal(code(answer), 'E_MAPPING_CONFLICT');
    assert.deepEqual(details(answer)['differs'], ['key_id']);
  });

  it('read_only: true against the read-write mapping gets 409 naming read_only, not a writable mapping', async () => {
    const answer = await daemon.call('PUT', '/v1/volumes/pd-own', body({ read_only: true }));
    assert.equal(answer.status, 409, answer.text);
    assert.deepEqual(details(answer)['differs'], ['read_only']);
  });

  it('another provider (plain over the LUKS2 mapping) gets 409 naming provider', async () => {
    const answer = await daemon.call('PUT', '/v1/volumes/pd-own', body({ provider: 'plain' }));
    assert.equal(code(answer), 'E_MAPPING_CONFLICT');
    assert.deepEqual(details(answer)['differs'], ['provider']);
  });
});

describe('a device is its major:minor, not a path', () => {
  it('a retry naming the same dm-backed device by another path (a multipath or LVM alias) is idempotent, not a conflict', async () => {
    const loop = await kernel.loopDevice(32);
    await kernel.sh(`dmsetup create pd-lin --table "0 $(blockdev --getsz ${loop}) linear ${loop} 0" && dmsetup mknodes pd-lin`);
    // A second node for the same major:minor, as /dev/dm-N or a by-id link is for /dev/mapper/NAME.
    await kernel.sh('set -- $(stat -c "%t %T" /dev/mapper/pd-lin) && mknod /dev/pd-lin-alias b $(printf "%d %d" 0x$1 0x$2)');
    const key = createKey('tenant-a');
    const body = (device: string) => ({ device, provider: 'luks2', key: { id: key }, project_id: 'tenant-a', format: 'if-blank' });
    assert.equal(ok<{ opened: boolean }>(await daemon.call('PUT', '/v1/volumes/pd-on-lin', body('/dev/mapper/pd-lin'))).opened, true);
    const retry = ok<{ opened: boolean }>(await daemon.call('PUT', '/v1/volumes/pd-on-lin', body('/dev/pd-lin-alias')));
    assert.equal(retry.opened, false);
    ok(await daemon.call('DELETE', '/v1/volumes/pd-on-lin'));
    await kernel.sh('rm /dev/pd-lin-alias && dmsetup remove pd-lin');
  });
});

describe('crypt mappings portcullis did not make are foreign', () => {
  let dev: string;
  before(async () => {
    dev = await kernel.loopDevice(8);
    // What crypttab or an operator makes: a mapping of the host's own.
    await kernel.sh(`head -c 64 /dev/urandom | cryptsetup open --type plain --cipher aes-xts-plain64 --key-size 512 --key-file=- ${dev} pd-foreign`);
  });

  it('attach over its name, detach and resize answer 409 E_MAPPING_FOREIGN, and it stays open', async () => {
    const attach = await daemon.call('PUT', '/v1/volumes/pd-foreign', { device: dev, provider: 'plain', key: { id: createKey('tenant-a') }, project_id: 'tenant-a' });
    assert.equal(attach.status, 409, attach.text);
    assert.equal(code(attach), 'E_MAPPING_FOREIGN');
    const detach = await daemon.call('DELETE', '/v1/volumes/pd-foreign');
    assert.equal(code(detach), 'E_MAPPING_FOREIGN');
    const resize = await daemon.call('POST', '/v1/volumes/pd-foreign/resize', { key: { id: createKey('tenant-a') }, project_id: 'tenant-a' });
    assert.equal(code(resize), 'E_MAPPING_FOREIGN');
    await kernel.sh('test -b /dev/mapper/pd-foreign');
  });

  it('the agent does not see it; an admin sees it as origin "foreign"', async () => {
    const agent = await daemon.callAs(NOBODY, NOBODY, 'GET', '/v1/volumes');
    assert.equal(agent.status, 200, agent.text);
    assert.deepEqual((agent.body as { volumes: Array<{ name: string }> }).volumes.filter((v) => v.name === 'pd-foreign'), []);
    assert.equal((await daemon.callAs(NOBODY, NOBODY, 'GET', '/v1/volumes/pd-foreign')).status, 404);
    const admin = ok<{ volumes: Array<{ name: string; origin: string }> }>(await daemon.call('GET', '/v1/volumes'));
    assert.equal(admin.volumes.find((v) => v.name === 'pd-foreign')?.origin, 'foreign');
  });

  it('a restarted daemon adopts its own mappings but not the foreign one', async () => {
    const mine = await kernel.loopDevice(8);
    const key = createKey('tenant-a');
    ok(await daemon.call('PUT', '/v1/volumes/pd-mine', { device: mine, provider: 'plain', key: { id: key }, project_id: 'tenant-a' }));
    daemon.child.kill('SIGKILL');
    await daemon.exited;
    daemon = await kernel.daemon({ dir, config: config() });
    const listed = ok<{ volumes: Array<{ name: string; origin: string; project_id: string | null }> }>(await daemon.call('GET', '/v1/volumes'));
    const byName = new Map(listed.volumes.map((v) => [v.name, v]));
    assert.deepEqual([byName.get('pd-mine')?.origin, byName.get('pd-mine')?.project_id], ['adopted', 'tenant-a']);
    assert.equal(byName.get('pd-foreign')?.origin, 'foreign');
    assert.equal(code(await daemon.call('DELETE', '/v1/volumes/pd-foreign')), 'E_MAPPING_FOREIGN');
    ok(await daemon.call('DELETE', '/v1/volumes/pd-mine'));
  });
});

describe('plain never maps over a device that holds something else', () => {
  it('a device holding ext4 or a LUKS header is refused with 422 E_DEVICE_NOT_PLAIN, nothing mapped, content unchanged', async () => {
    const [ext4, luks] = [await kernel.loopDevice(16), await kernel.loopDevice(16)];
    await kernel.sh(`mkfs.ext4 -q -F ${ext4} && head -c 64 /dev/urandom | cryptsetup luksFormat --batch-mode --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file=- ${luks}`);
    const key = createKey('tenant-a');
    for (const [dev, what] of [[ext4, 'ext4'], [luks, 'crypto_LUKS']] as const) {
      const before = await kernel.sha(dev, 16 * 1024 * 1024);
      const answer = await daemon.call('PUT', '/v1/volumes/pd-plain-over', { device: dev, provider: 'plain', key: { id: key }, project_id: 'tenant-a' });
      assert.equal(answer.status, 422, answer.text);
      assert.equal(code(answer), 'E_DEVICE_NOT_PLAIN');
      assert.match(answer.text, new RegExp(what));
      await kernel.sh('! test -e /dev/mapper/pd-plain-over');
      assert.equal(await kernel.sha(dev, 16 * 1024 * 1024), before);
    }
  });
});

describe('erase acts only on what the record names', () => {
  it("an erase never acts on a disk it cannot prove: 404 E_VOLUME_NOT_FOUND with no record and no disk carrying its token, 409 E_ERASE_REFUSED for a named device that is not the disk (with or without a record); the other volume's LUKS header is intact", async () => {
    const dev = await kernel.loopDevice(32);
    const key = createKey('tenant-a');
    ok(await daemon.call('PUT', '/v1/volumes/pd-victim', { device: dev, provider: 'luks2', key: { id: key }, project_id: 'tenant-a', format: 'if-blank' }));
    ok(await daemon.call('DELETE', '/v1/volumes/pd-victim'));
    const header = await kernel.sha(dev, 32 * 1024 * 1024);
    // No record and no disk on the host carries the token of pdi-none: nothing to erase.
    const unrecorded = await daemon.call('DELETE', '/v1/ephemeral/pdi-none/disk0?erase=true', { project_id: 'tenant-a' });
    assert.equal(unrecorded.status, 404, unrecorded.text);
    assert.equal(code(unrecorded), 'E_VOLUME_NOT_FOUND');
    // Naming the victim: its header holds no token of that disk, so it is not the disk.
    const named = await daemon.call('DELETE', '/v1/ephemeral/pdi-none/disk0?erase=true', { project_id: 'tenant-a', device: dev });
    assert.equal(named.status, 409, named.text);
    assert.equal(code(named), 'E_ERASE_REFUSED');
    // A record of the disk on its own device: naming the victim instead is E_ERASE_REFUSED.
    const own = await kernel.loopDevice(32);
    ok(await daemon.call('PUT', '/v1/ephemeral/pdi-dev/disk0', { device: own, project_id: 'tenant-a' }));
    const refused = await daemon.call('DELETE', '/v1/ephemeral/pdi-dev/disk0?erase=true', { project_id: 'tenant-a', device: dev });
    assert.equal(refused.status, 409, refused.text);
    assert.equal(code(refused), 'E_ERASE_REFUSED');
    await kernel.sh('test -b /dev/mapper/ephemeral-pdi-dev+disk0');
    assert.equal(await kernel.sha(dev, 32 * 1024 * 1024), header);
    ok(await daemon.call('PUT', '/v1/volumes/pd-victim', { device: dev, provider: 'luks2', key: { id: key }, project_id: 'tenant-a' }));
    ok(await daemon.call('DELETE', '/v1/volumes/pd-victim'));
    const erased = ok<{ erased: boolean; key_deleted: boolean }>(await daemon.call('DELETE', '/v1/ephemeral/pdi-dev/disk0?erase=true', { project_id: 'tenant-a' }));
    assert.deepEqual([erased.erased, erased.key_deleted], [true, true]);
  });

  it('a key the record did not create for that disk is never deleted (409 E_ERASE_REFUSED), and the disk is not erased', async () => {
    const dev = await kernel.loopDevice(32);
    const attached = ok<{ key_id: string }>(await daemon.call('PUT', '/v1/ephemeral/pdi-k/disk0', { device: dev, project_id: 'tenant-a' }));
    const other = createKey('tenant-a');
    const answer = await daemon.call('DELETE', '/v1/ephemeral/pdi-k/disk0?erase=true', { project_id: 'tenant-a', key: { id: other } });
    assert.equal(answer.status, 409, answer.text);
    assert.equal(code(answer), 'E_ERASE_REFUSED');
    assert.equal(keyCli('get', other, '--project', 'tenant-a', '--metadata-only', '--output', 'json').status, 0, 'the other key still exists');
    await kernel.sh('test -b /dev/mapper/ephemeral-pdi-k+disk0');
    const erased = ok<{ key_deleted: boolean; erased: boolean }>(await daemon.call('DELETE', '/v1/ephemeral/pdi-k/disk0?erase=true', { project_id: 'tenant-a' }));
    assert.deepEqual([erased.erased, erased.key_deleted], [true, true]);
    assert.notEqual(keyCli('get', attached.key_id, '--project', 'tenant-a', '--metadata-only', '--output', 'json').status, 0, 'the instance key is gone');
  });

  it('another project cannot erase the disk (409 E_ERASE_REFUSED); the owner still can after a plain detach', async () => {
    const dev = await kernel.loopDevice(32);
    ok(await daemon.call('PUT', '/v1/ephemeral/pdi-p/disk0', { device: dev, project_id: 'tenant-a' }));
    const stranger = await daemon.call('DELETE', '/v1/ephemeral/pdi-p/disk0?erase=true', { project_id: 'tenant-b' });
    assert.equal(code(stranger), 'E_ERASE_REFUSED');
    await kernel.sh('test -b /dev/mapper/ephemeral-pdi-p+disk0');
    ok(await daemon.call('DELETE', '/v1/ephemeral/pdi-p/disk0'));
    const erased = ok<{ erased: boolean; key_deleted: boolean }>(await daemon.call('DELETE', '/v1/ephemeral/pdi-p/disk0?erase=true', { project_id: 'tenant-a' }));
    assert.deepEqual([erased.erased, erased.key_deleted], [true, true]);
    // luksDump's own exit is checked: a failed dump shows no keyslot either, and must not pass for an erased disk.
    await kernel.sh(`dump="$(cryptsetup luksDump ${dev})" && ! printf '%s\\n' "$dump" | grep -qE '^  [0-9]+: luks2'`);
  });
});
