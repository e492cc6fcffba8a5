/**
 * nova's code path, for real: Debian's os-brick picks portcullis_brick's
 * encryptor from a volume type's provider string (get_volume_encryptor, as
 * nova's libvirt driver calls it), the encryptor asks a real portcullisd over
 * its socket, and the daemon's dm-crypt work happens on the VM's kernel.
 * Then os-brick's own classes (their commands run in the guest, key from a
 * stub key manager holding the same bytes) open what portcullis made, and
 * the reverse: the volumes are one format. docs/nova.md says what is real.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { createKeyIn, fileDaemon, type FileDaemon } from '../daemon/vm-setup.js';
import { startBrickDriver, type BrickDriver, type BrickOutcome, type BrickStep } from './brick-driver.js';

const cli = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const PROJECT = 'nova-project';
let file: FileDaemon;
let brick: BrickDriver | undefined;

/** The key's bytes as hex, read the way an operator would (for os-brick's stub key manager). */
function keyHex(keyId: string): string {
  const run = spawnSync(process.execPath, [cli, '--config', file.daemon.configPath, 'key', 'get', keyId, '--project', PROJECT, '--output', 'hex'], { encoding: 'utf8' });
  assert.equal(run.status, 0, run.stderr);
  return run.stdout.trim();
}

/** A blank disk behind an attachment symlink, as os-brick's connector leaves it: the link and the loop device. */
async function attachedDisk(tag: string, mib = 32): Promise<{ link: string; loop: string; name: string }> {
  const loop = await file.kernel.loopDevice(mib);
  const base = `virtio-nb-${tag}-${randomBytes(3).toString('hex')}`;
  const link = `/dev/disk/by-id/${base}`;
  await file.kernel.sh(`mkdir -p /dev/disk/by-id && ln -sfn ${loop} ${link}`);
  return { link, loop, name: `crypt-${base}` };
}

/** The connector's part on a re-attach: the link names the disk again (os-brick's encryptor had pointed it at the mapping). */
const reconnect = (d: { link: string; loop: string }) => file.kernel.sh(`ln -sfn ${d.loop} ${d.link}`);

async function ok(step: BrickStep): Promise<BrickOutcome> {
  brick ??= startBrickDriver(file.kernel.runner, { PORTCULLIS_SOCKET: file.daemon.socketPath, PORTCULLIS_BRICK_STATE_DIR: mkdtempSync(join(tmpdir(), 'portcullis-brick-state-')) });
  const out = await brick.step(step);
  assert.equal(out.error, undefined, `${step.op} through ${step.provider}: ${JSON.stringify(out.error)}`);
  return out;
}

const sh = (script: string) => file.kernel.sh(script);

const cases = [
  { format: 'luks2', ours: 'portcullis_brick.Luks2Encryptor', theirs: 'luks2', theirClass: 'os_brick.encryptors.luks.Luks2Encryptor', header: 'LUKS2', extends: true },
  { format: 'luks', ours: 'portcullis_brick.LuksEncryptor', theirs: 'luks', theirClass: 'os_brick.encryptors.luks.LuksEncryptor', header: 'LUKS1', extends: true },
  { format: 'plain', ours: 'portcullis_brick.PlainEncryptor', theirs: 'plain', theirClass: 'os_brick.encryptors.cryptsetup.CryptsetupEncryptor', header: 'PLAIN', extends: false },
] as const;

describe('nova through os-brick', () => {
  file = fileDaemon('portcullis-nova-brick-');
  after(() => brick?.stop());
  for (const c of cases) {
    describe(`${c.ours} through get_volume_encryptor, beside ${c.theirClass}`, () => {
      let keyId: string;
      let hex: string;
      const step = (op: BrickStep['op'], provider: string, d: { link: string }): BrickStep => ({
        op, provider, device_path: d.link, key_id: keyId, key_hex: hex, project: PROJECT, token: null, cipher: 'aes-xts-plain64', key_size: 512,
      });
      before(() => {
        keyId = createKeyIn(file.daemon, PROJECT, 512);
        hex = keyHex(keyId);
      });

      it('attach formats the blank disk and points the link at the mapping; data written through it is read back by os-brick\'s own class', async () => {
        const d = await attachedDisk(c.format);
        const ours = await ok(step('attach', c.ours, d));
        assert.equal(ours.class, `portcullis_brick.encryptors.${c.ours.split('.')[1]}`);
        assert.deepEqual(ours.commands, [], 'portcullis_brick ran nothing itself: the daemon did the work');
        assert.equal(await sh(`readlink ${d.link}`), `/dev/mapper/${d.name}`);
        const status = await sh(`cryptsetup status ${d.name}`);
        assert.match(status, new RegExp(`type:\\s+${c.header}`), status);
        assert.match(status, new RegExp(`device:\\s+${d.loop}`), status);
        const written = await sh(`head -c 1048576 /dev/urandom > /tmp/${d.name}.bin && dd if=/tmp/${d.name}.bin of=${d.link} bs=1M conv=fsync status=none && sha256sum < /tmp/${d.name}.bin | cut -d' ' -f1`);
        assert.notEqual(await file.kernel.sha(d.loop), written, 'the disk itself holds ciphertext');

        await ok(step('detach', c.ours, d));
        await ok(step('detach', c.ours, d)); // nova may detach twice: the second finds nothing to close
        assert.equal(await sh(`test -e /dev/mapper/${d.name} && echo open || echo closed`), 'closed');

        await reconnect(d);
        const theirs = await ok(step('attach', c.theirs, d));
        assert.equal(theirs.class, c.theirClass);
        assert.ok(!theirs.commands.some((argv) => argv.includes('luksFormat')), `os-brick did not format it again: ${JSON.stringify(theirs.commands)}`);
        assert.equal(await sh(`readlink ${d.link}`), `/dev/mapper/${d.name}`);
        assert.equal(await file.kernel.sha(d.link), written, "os-brick's own class reads what was written through portcullis");
        await ok(step('detach', c.theirs, d));
      });

      it("what os-brick's own class formatted and wrote, portcullis opens and reads", async () => {
        const d = await attachedDisk(`${c.format}-r`);
        const theirs = await ok(step('attach', c.theirs, d));
        if (c.format !== 'plain') assert.ok(theirs.commands.some((argv) => argv.includes('luksFormat')), 'os-brick formatted the blank disk');
        const written = await sh(`head -c 1048576 /dev/urandom > /tmp/${d.name}.bin && dd if=/tmp/${d.name}.bin of=${d.link} bs=1M conv=fsync status=none && sha256sum < /tmp/${d.name}.bin | cut -d' ' -f1`);
        await ok(step('detach', c.theirs, d));
        await reconnect(d);
        await ok(step('attach', c.ours, d));
        assert.equal(await sh(`readlink ${d.link}`), `/dev/mapper/${d.name}`);
        assert.equal(await file.kernel.sha(d.link), written, 'portcullis reads what os-brick wrote');
        await ok(step('detach', c.ours, d));
      });

      if (c.extends) {
        it('extend after the backing device grew returns the mapping\'s new size', async () => {
          const d = await attachedDisk(`${c.format}-x`);
          await ok(step('attach', c.ours, d));
          const before = Number(await sh(`blockdev --getsize64 /dev/mapper/${d.name}`));
          await sh(`truncate -s +16M $(losetup -nO BACK-FILE ${d.loop}) && losetup -c ${d.loop}`);
          const grown = await ok(step('extend', c.ours, d));
          const after = Number(await sh(`blockdev --getsize64 /dev/mapper/${d.name}`));
          assert.equal(after, before + 16 * 1024 * 1024, 'the mapping grew by what the device grew');
          assert.equal(grown.value, after, 'extend_volume returned the decrypted size');
          await ok(step('detach', c.ours, d));
        });
      }
    });
  }
});
