/**
 * A host without device-mapper (no /dev/mapper/control: a container, a
 * kernel without dm_mod) cannot open any mapping. That is the host's fault,
 * not the request's: a valid attach is answered 503 E_DM_UNAVAILABLE, never
 * 400 E_CRYPTSETUP_PARAMS, and health says "failing" for the same reason.
 * The real cryptsetup runs through the daemon's real runner; only where
 * device-mapper is absent, since elsewhere the open would succeed. Absent
 * means the kernel has no device-mapper misc device: /dev/mapper/control
 * alone proves nothing, libdevmapper creates the node itself on first use.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { FIXED_KEY_ID } from '../../../src/keyclient/backends/fixed.js';
import { startDaemonProcess, type DaemonProcess } from '../../fixtures/daemon.js';

const why = existsSync('/sys/class/misc/device-mapper')
  ? 'this kernel has device-mapper (/sys/class/misc/device-mapper): a plain open would succeed; the no-dm answer is only observable on a host without it'
  : process.getuid?.() !== 0
    ? 'needs root for a loop device and for cryptsetup to try device-mapper'
    : false;

describe('attach on a host without device-mapper', { skip: why }, () => {
  let dir: string;
  let loop: string | undefined;
  let daemon: DaemonProcess;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'portcullisd-nodm-'));
    // Blank, so a plain mapping is allowed (no signature to protect) and the request reaches `cryptsetup open`.
    const backing = join(dir, 'blank.img');
    writeFileSync(backing, Buffer.alloc(8 << 20));
    loop = execFileSync('losetup', ['-f', '--show', backing], { encoding: 'utf8' }).trim();
    daemon = await startDaemonProcess({
      dir,
      config: { key_manager: { backend: 'fixed', fixed: { key: 'ab'.repeat(32), allow_insecure: true } }, log: { format: 'json' } },
    });
  });
  after(async () => {
    await daemon?.stop();
    if (loop !== undefined) execFileSync('losetup', ['-d', loop]);
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  it('a valid plain attach is 503 E_DM_UNAVAILABLE saying device-mapper is missing, with Retry-After; health is failing on dm_crypt', async () => {
    const answer = await daemon.call('PUT', '/v1/volumes/nodm', { device: loop, provider: 'plain', key: { id: FIXED_KEY_ID }, project_id: 'p1' });
    const error = (answer.body as { error?: { code: string; message: string; details: { stderr?: string } } }).error;
    assert.ok(error !== undefined, `an error answer, got ${answer.status} ${answer.text}`);
    assert.equal(error.code, 'E_DM_UNAVAILABLE', answer.text);
    assert.equal(answer.status, 503);
    assert.equal(answer.headers['retry-after'], '1');
    assert.match(error.message, /device-mapper is not available/);
    const health = await daemon.call('GET', '/v1/health');
    assert.equal(health.status, 503);
    const body = health.body as { status: string; checks: Record<string, { ok: boolean }> };
    assert.equal(body.status, 'failing');
    assert.equal(body.checks['dm_crypt']?.ok, false);
  });
});
