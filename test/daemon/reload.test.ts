/**
 * Config reloads in-process (SIGHUP calls reload()): two signals in quick
 * succession are coalesced by the kernel, so the overlap they can cause is
 * driven here directly, with two reload() calls at once.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { describe, it } from 'node:test';
import { loadConfigFile } from '../../src/config/load.js';
import { startDaemon } from '../../src/daemon/daemon.js';
import { plainAllocator } from '../../src/util/secure-memory.js';
import { localDeviceOps } from '../../src/luks/device/ops.js';
import { productionDeps } from '../../src/daemon/host.js';

const { helper } = productionDeps();

describe('startDaemon() reload()', () => {
  it('two reloads at once run one after the other: one new key manager for the new config, not two (one of them leaked)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'portcullisd-reload-'));
    const file = join(dir, 'portcullis.yaml');
    const base = `key_manager:\n  backend: local\n  local:\n    path: ${dir}/keystore.db\n    kek_file: ${dir}/kek\nsocket:\n  path: ${dir}/portcullis.sock\nlog:\n  format: json\n`;
    writeFileSync(file, base);
    const stream = new PassThrough();
    let log = '';
    stream.on('data', (c: Buffer) => (log += c.toString()));
    const daemon = await startDaemon(file, loadConfigFile(file).config, {
      ops: localDeviceOps(),
      ...(helper === undefined ? {} : { helper }),
      readPeer: () => ({ pid: process.pid, uid: 0, gid: 0 }),
      allocator: plainAllocator(),
      version: 'test',
      logStream: stream,
    });
    try {
      writeFileSync(file, `${base}cache:\n  ttl_seconds: 77\n`);
      assert.deepEqual(await Promise.all([daemon.reload(), daemon.reload()]), [true, true]);
      const reloads = log.split('\n').filter((l) => l.includes('"message":"config reloaded"'));
      // The second runs after the first and finds the key manager already reopened for this config.
      assert.deepEqual(reloads.map((l) => /"key_manager_reopened":(true|false)/.exec(l)?.[1]), ['true', 'false'], log);
    } finally {
      await daemon.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
