/**
 * The command channel without qemu: the real frame codec, and a real
 * LocalRunner served over a real unix socket through the broker, the same
 * code the VM path uses. Runs in the ordinary suite (no privileges needed).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connectRunner, serveRunner, type Broker } from './broker.js';
import type { ChannelClient } from './channel.js';
import { VmError } from './errors.js';
import { LocalRunner } from './local-runner.js';
import { FrameDecoder, encodeFrame, type Header } from './protocol.js';

describe('FrameDecoder', () => {
  it('reassembles frames split at every byte boundary and packed together', () => {
    const frames: Array<[Header, Buffer]> = [
      [{ type: 'hello', where: 'vm test' }, Buffer.alloc(0)],
      [{ type: 'run', id: 7, argv: ['cat'], timeoutMs: 1000, maxOutputBytes: 10 }, randomBytes(5000)],
      [{ type: 'result', id: 7, code: 0, signal: null, timedOut: false, stdoutBytes: 2 }, Buffer.from('okerr')],
    ];
    const wire = Buffer.concat(frames.map(([h, b]) => encodeFrame(h, b)));
    for (const step of [1, 3, 4096, wire.length]) {
      const decoder = new FrameDecoder();
      const out = [];
      for (let i = 0; i < wire.length; i += step) out.push(...decoder.push(wire.subarray(i, i + step)));
      assert.deepEqual(out.map((f) => [f.header, f.body]), frames);
    }
  });

  it('refuses an oversized frame and a malformed header with E_VM_CHANNEL', () => {
    const huge = Buffer.alloc(8);
    huge.writeUInt32BE(2 ** 31, 4);
    assert.throws(() => new FrameDecoder().push(huge), (err: unknown) => err instanceof VmError && err.code === 'E_VM_CHANNEL');
    const json = Buffer.from('{"type":"run","id":-1}');
    const prefix = Buffer.alloc(8);
    prefix.writeUInt32BE(json.length, 0);
    assert.throws(() => new FrameDecoder().push(Buffer.concat([prefix, json])), /Malformed frame header/);
  });
});

describe('a LocalRunner through the broker', () => {
  let dir: string;
  let broker: Broker;
  let client: ChannelClient;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'portcullis-channel-test-'));
    broker = await serveRunner(new LocalRunner('local test'), join(dir, 'broker.sock'));
    client = await connectRunner(broker.socketPath);
  });

  after(async () => {
    client?.close();
    await broker?.close();
    await broker?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('says where commands run', () => {
    assert.equal(client.where, 'local test');
  });

  it('carries stdin, stdout, stderr and the exit code byte for byte', async () => {
    const data = randomBytes(3 * 1024 * 1024);
    const r = await client.run(['sh', '-c', 'cat; echo fail >&2; exit 9'], { stdin: data });
    assert.equal(r.code, 9);
    assert.ok(r.stdout.equals(data));
    assert.equal(r.stderr.toString(), 'fail\n');
  });

  it('passes cwd and env', async () => {
    const r = await client.run(['sh', '-c', 'pwd; echo "$PORTCULLIS_T"'], { cwd: dir, env: { PORTCULLIS_T: 'x y' } });
    assert.equal(r.stdout.toString(), `${dir}\nx y\n`);
  });

  it('reports a timeout as a result, and the command is dead', async () => {
    const r = await client.run(['sleep', '60'], { timeoutMs: 200 });
    assert.deepEqual([r.code, r.signal, r.timedOut], [null, 'SIGKILL', true]);
  });

  it('carries the runner\'s errors with their codes and errno', async () => {
    await assert.rejects(client.run(['/nonexistent/x']), (err: unknown) => err instanceof VmError && err.code === 'E_RUN_SPAWN' && err.details.errno === 'ENOENT');
    await assert.rejects(client.run(['head', '-c', '4096', '/dev/zero'], { maxOutputBytes: 100 }), (err: unknown) => err instanceof VmError && err.code === 'E_RUN_OUTPUT_LIMIT');
  });

  it('keeps concurrent answers apart', async () => {
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => client.run(['sh', '-c', 'sleep 0.$(( $1 % 3 )); echo $1', 'sh', String(i)])));
    assert.deepEqual(results.map((r) => r.stdout.toString()), Array.from({ length: 20 }, (_, i) => `${i}\n`));
  });

  it('rejects runs after close() with E_VM_STOPPED', async () => {
    const other = await connectRunner(broker.socketPath);
    other.close();
    other.close();
    await assert.rejects(other.run(['true']), (err: unknown) => err instanceof VmError && err.code === 'E_VM_STOPPED');
  });

  it('fails pending runs with E_VM_CHANNEL when the broker goes away', async () => {
    const sock = join(dir, 'second.sock');
    const second = await serveRunner(new LocalRunner(), sock);
    const c = await connectRunner(sock);
    // Whether or not the request got there first, the client must see the loss.
    const pending = c.run(['sleep', '2']);
    await second.close();
    await assert.rejects(pending, (err: unknown) => err instanceof VmError && err.code === 'E_VM_CHANNEL');
  });
});
