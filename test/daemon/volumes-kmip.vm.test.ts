/**
 * portcullisd with keys in a real KMIP server (PyKMIP from Debian, mutual
 * TLS, a CA made for this run) on a real kernel: a volume whose key lives in
 * KMIP attaches end to end, and the cache serves it while PyKMIP is stopped.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { kmipBackend } from '../../src/keyclient/backends/kmip/backend.js';
import type { KeyManager } from '../../src/keyclient/key-manager.js';
import { plainAllocator } from '../../src/util/secure-memory.js';
import type { DaemonProcess } from '../fixtures/daemon.js';
import { startKmip, type KmipServer } from '../fixtures/kmip-server.js';
import { code, daemonKernel, ok, type DaemonKernel } from './vm-setup.js';

let kernel: DaemonKernel;
let kmip: KmipServer;
let direct: KeyManager;
let daemon: DaemonProcess;

before(async () => {
  const [k, s] = await Promise.allSettled([daemonKernel(), startKmip()]);
  if (k.status === 'fulfilled') kernel = k.value;
  if (s.status === 'fulfilled') kmip = s.value;
  if (k.status === 'rejected') throw k.reason;
  if (s.status === 'rejected') throw s.reason;
  direct = await kmipBackend.create(kmipBackend.optionsSchema.parse(kmip.options()), { allocator: plainAllocator() });
  daemon = await kernel.daemon({ config: { key_manager: { backend: 'kmip', kmip: kmip.options() }, retry: { attempts: 1 }, log: { format: 'json' } } });
});
after(async () => {
  await kernel?.cleanup();
  await direct?.close();
  await kmip?.stop();
});

describe('volumes with KMIP keys', () => {
  it('luks2: attach → write → detach → reattach (cache) → verify; with PyKMIP stopped the cached key attaches and an uncached one is 503 E_BACKEND_UNAVAILABLE', async () => {
    const [dev, other] = [await kernel.loopDevice(32), await kernel.loopDevice(4)]; // LUKS2's default header alone takes 16 MiB
    const key = await direct.createKey({ projectId: 'tenant-k' }, { algorithm: 'aes', length: 256 });
    const uncached = await direct.createKey({ projectId: 'tenant-k' }, { algorithm: 'aes', length: 256 });
    const body = { device: dev, provider: 'luks2', key: { id: key, backend: 'kmip' }, project_id: 'tenant-k', format: 'if-blank' };
    const first = ok<{ key_source: string; formatted: boolean }>(await daemon.call('PUT', '/v1/volumes/pd-kmip', body));
    assert.deepEqual([first.key_source, first.formatted], ['backend', true]);
    await kernel.sh('yes kmip-data | head -c 1048576 | dd of=/dev/mapper/pd-kmip bs=1M conv=fsync status=none');
    const written = await kernel.sha('/dev/mapper/pd-kmip', 1048576);
    ok(await daemon.call('DELETE', '/v1/volumes/pd-kmip'));

    await kmip.stop();
    const again = ok<{ key_source: string; formatted: boolean }>(await daemon.call('PUT', '/v1/volumes/pd-kmip', body));
    assert.deepEqual([again.key_source, again.formatted], ['cache', false]);
    assert.equal(await kernel.sha('/dev/mapper/pd-kmip', 1048576), written);
    const down = await daemon.call('PUT', '/v1/volumes/pd-kmip-2', { device: other, provider: 'plain', key: { id: uncached }, project_id: 'tenant-k' });
    assert.equal(down.status, 503, down.text);
    assert.equal(code(down), 'E_BACKEND_UNAVAILABLE');
    await kernel.sh('! test -e /dev/mapper/pd-kmip-2');
    ok(await daemon.call('DELETE', '/v1/volumes/pd-kmip'));
  });
});
