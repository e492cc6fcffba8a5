/**
 * examples/kmip.yaml works exactly as shipped against scripts/kmip-dev-server
 * (what `make kmip-dev` runs): a real PyKMIP on 127.0.0.1:5696 with its
 * certificates in /tmp/portcullis-kmip/.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { repoRoot } from '../helpers/paths.js';

const cli = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const devDir = '/tmp/portcullis-kmip';

function portcullis(args: string[], input?: string) {
  const result = spawnSync(process.execPath, [cli, ...args, '--config', join(repoRoot, 'examples', 'kmip.yaml')], { input, timeout: 60_000 });
  return { status: result.status, text: result.stdout.toString(), stderr: result.stderr.toString() };
}

function ok(args: string[], input?: string): string {
  const run = portcullis(args, input);
  assert.equal(run.status, 0, `portcullis ${args.join(' ')} failed: ${run.stderr}`);
  return run.text;
}

const listening = (port: number) =>
  new Promise<boolean>((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });

describe('examples/kmip.yaml against scripts/kmip-dev-server', () => {
  let server: ChildProcess | undefined;
  let madeDir = false;
  before(async () => {
    assert.equal(await listening(5696), false, 'something already listens on 127.0.0.1:5696 (a `make kmip-dev` left running?); stop it first');
    madeDir = !existsSync(devDir);
    server = spawn(join(repoRoot, 'scripts', 'kmip-dev-server'), [], { detached: true, stdio: 'ignore' });
    const deadline = Date.now() + 30_000;
    while (!(await listening(5696))) {
      if (server.exitCode !== null) throw new Error(`scripts/kmip-dev-server exited (${server.exitCode}) before listening`);
      if (Date.now() > deadline) throw new Error('scripts/kmip-dev-server did not listen on 5696 within 30 s');
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  });
  after(async () => {
    if (server?.pid !== undefined && server.exitCode === null) {
      const exited = new Promise((resolve) => server?.once('exit', resolve));
      process.kill(-server.pid, 'SIGINT'); // PyKMIP stops on SIGINT in 1–2 s
      const timer = setTimeout(() => server?.pid !== undefined && process.kill(-server.pid, 'SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
    if (madeDir) rmSync(devDir, { recursive: true, force: true });
  });

  it('creates, reads, lists and deletes a key in the --project given, and keeps other projects out', () => {
    const id = ok(['key', 'create', '--project', 'tenant-1', '--name', 'example']).trim();
    assert.match(ok(['key', 'get', id, '--project', 'tenant-1']).trim(), /^[0-9a-f]{64}$/);
    assert.ok(ok(['key', 'list', '--project', 'tenant-1', '--name', 'example']).includes(id));
    const other = portcullis(['key', 'get', id, '--project', 'tenant-2']);
    assert.equal(other.status, 1);
    assert.match(other.stderr, /E_KEY_NOT_FOUND/);
    ok(['key', 'delete', id, '--project', 'tenant-1']);
    assert.match(portcullis(['key', 'get', id, '--project', 'tenant-1']).stderr, /E_KEY_NOT_FOUND/);
  });

  it('stores a passphrase from standard input and gives back the same bytes', () => {
    const id = ok(['key', 'store', '--type', 'passphrase', '--project', 'tenant-1'], 'example passphrase').trim();
    assert.equal(ok(['key', 'get', id, '--project', 'tenant-1', '--output', 'raw']), 'example passphrase');
  });
});
