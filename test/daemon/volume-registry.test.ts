import assert from 'node:assert/strict';
import { chmodSync, chownSync, lstatSync, mkdtempSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { describe, it } from 'node:test';
import { createLogger } from '../../src/daemon/log.js';
import { logOptionsSchema } from '../../src/config/daemon-options.js';
import { volumeRegistry } from '../../src/daemon/volume-registry.js';

function capture() {
  const stream = new PassThrough();
  let out = '';
  stream.on('data', (c: Buffer) => (out += c.toString()));
  return { log: createLogger(logOptionsSchema.parse({ format: 'json', level: 'debug' }), stream), out: () => out };
}

/** For records saved without a major:minor: the path decides. */
const noRdev = async (): Promise<string | undefined> => undefined;

const fileIn = () => join(mkdtempSync(join(tmpdir(), 'portcullis-registry-')), 'volumes.json');

describe('volumeRegistry()', () => {
  it('saves every attach and detach to a 0600 file that the next daemon reads back for the same mapping on the same device', async () => {
    const file = fileIn();
    const first = volumeRegistry(file, capture().log);
    first.set('vol-a', { origin: 'attached', device: '/dev/loop3', projectId: 'p1', keyId: 'k1' });
    first.set('eph-b', { origin: 'attached', device: '/dev/loop4', projectId: 'p2', keyId: 'k2', keyScope: 'instance' });
    first.set('vol-c', { origin: 'attached', device: '/dev/loop5', projectId: 'p3', keyId: 'k3' });
    first.delete('vol-c');
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.doesNotMatch(readFileSync(file, 'utf8'), /vol-c/);

    const next = volumeRegistry(file, capture().log);
    assert.equal(next.size, 0, 'nothing is known until the kernel confirms it');
    assert.deepEqual(await next.saved('vol-a', '/dev/loop3', noRdev), { origin: 'adopted', device: '/dev/loop3', projectId: 'p1', keyId: 'k1' });
    assert.deepEqual(await next.saved('eph-b', '/dev/loop4', noRdev), { origin: 'adopted', device: '/dev/loop4', projectId: 'p2', keyId: 'k2', keyScope: 'instance' });
    assert.equal(await next.saved('vol-c', '/dev/loop5', noRdev), undefined, 'detached');
  });

  it('a saved record for a mapping now on another device (or with none known) is not believed', async () => {
    const file = fileIn();
    volumeRegistry(file, capture().log).set('vol-a', { origin: 'attached', device: '/dev/loop3', projectId: 'p1', keyId: 'k1' });
    const next = volumeRegistry(file, capture().log);
    assert.equal(await next.saved('vol-a', '/dev/loop9', noRdev), undefined);
    assert.equal(await next.saved('vol-a', undefined, noRdev), undefined);
  });

  it('an unreadable file is a warning, and the daemon goes on without it', async () => {
    const file = fileIn();
    writeFileSync(file, '{"version":1,"volumes":{"vol-a":{"projectId":', { mode: 0o600 });
    const captured = capture();
    const registry = volumeRegistry(file, captured.log);
    assert.equal(await registry.saved('vol-a', '/dev/loop3', noRdev), undefined);
    assert.match(captured.out(), /ignoring an unreadable volume registry/);
    registry.set('vol-b', { origin: 'attached', device: '/dev/loop1', projectId: 'p', keyId: 'k' });
    assert.equal(JSON.parse(readFileSync(file, 'utf8')).volumes['vol-b'].keyId, 'k', 'and replaces it on the next change');
  });

  it('a file it cannot write is a warning; attaches go on', async () => {
    const captured = capture();
    const registry = volumeRegistry('/nonexistent-dir/volumes.json', captured.log);
    registry.set('vol-a', { origin: 'attached', device: '/dev/loop3', projectId: 'p1', keyId: 'k1' });
    assert.equal(registry.get('vol-a')?.keyId, 'k1');
    assert.match(captured.out(), /cannot save the volume registry/);
  });

  it('never follows a symlink planted at the temporary file: the file it points at stays as it was', async () => {
    const file = fileIn();
    const victim = join(mkdtempSync(join(tmpdir(), 'portcullis-victim-')), 'passwd');
    writeFileSync(victim, 'root:x:0:0\n');
    symlinkSync(victim, `${file}.tmp`);
    const registry = volumeRegistry(file, capture().log);
    registry.set('vol-a', { origin: 'attached', device: '/dev/loop3', projectId: 'p1', keyId: 'k1' });
    assert.equal(readFileSync(victim, 'utf8'), 'root:x:0:0\n');
    assert.equal(lstatSync(file).isFile(), true);
    assert.equal(JSON.parse(readFileSync(file, 'utf8')).volumes['vol-a'].keyId, 'k1');
  });

  it('a record with a major:minor matches the device however the kernel names it, and never another device at the same path', async () => {
    const file = fileIn();
    volumeRegistry(file, capture().log).set('vol-a', { origin: 'attached', device: '/dev/mapper/mpatha', rdev: '253:4', projectId: 'p1', keyId: 'k1' });
    const next = volumeRegistry(file, capture().log);
    const rdevs: Record<string, string> = { '/dev/dm-4': '253:4', '/dev/mapper/mpatha': '253:9' };
    const rdevOf = async (path: string) => rdevs[path];
    assert.equal((await next.saved('vol-a', '/dev/dm-4', rdevOf))?.projectId, 'p1', 'the same device under its other name');
    assert.equal(await next.saved('vol-a', '/dev/mapper/mpatha', rdevOf), undefined, 'the same path, now another device');
  });

  it('does not believe a records file that is a symlink, or that another user owns or may write', async () => {
    for (const plant of ['symlink', 'foreign owner', 'world-writable'] as const) {
      const file = fileIn();
      const forged = JSON.stringify({ version: 1, volumes: { 'vol-x': { device: '/dev/loop3', projectId: 'p1', keyId: 'k1' } } });
      if (plant === 'symlink') {
        const elsewhere = join(mkdtempSync(join(tmpdir(), 'portcullis-forged-')), 'volumes.json');
        writeFileSync(elsewhere, forged, { mode: 0o600 });
        symlinkSync(elsewhere, file);
      } else {
        writeFileSync(file, forged, { mode: plant === 'world-writable' ? 0o666 : 0o600 });
        if (plant === 'world-writable') chmodSync(file, 0o666); // the mode option is cut by the umask
        else chownSync(file, 65534, 65534);
      }
      const captured = capture();
      assert.equal(await volumeRegistry(file, captured.log).saved('vol-x', '/dev/loop3', noRdev), undefined, plant);
      assert.match(captured.out(), /ignoring an unreadable volume registry/, plant);
    }
  });
});

