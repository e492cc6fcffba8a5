import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { healthOk, portcullis, startStandIn } from './daemon-stand-in.js';

/**
 * `portcullis doctor` on this host: without a daemon, and against a stand-in
 * daemon (daemon-stand-in.ts) for the daemon's side of the checks.
 */

const dir = mkdtempSync(join(tmpdir(), 'portcullis-doctor-'));
after(() => rmSync(dir, { recursive: true, force: true }));

interface Finding {
  verdict: 'ok' | 'warn' | 'fail';
  check: string;
  detail: string;
  hint?: string;
}

function writeConfig(name: string, socket: string, kek: string): string {
  const path = join(dir, name);
  writeFileSync(path, ['key_manager:', '  backend: local', '  local:', `    path: ${join(dir, 'keystore.db')}`, `    kek_file: ${kek}`, 'socket:', `  path: ${socket}`, ''].join('\n'));
  return path;
}

describe('portcullis doctor', () => {
  it('runs without a daemon: FAIL lines with fix hints for the socket and the daemon, exit 1', async () => {
    const kek = join(dir, 'kek-ok');
    writeFileSync(kek, Buffer.alloc(32, 7), { mode: 0o600 });
    const config = writeConfig('no-daemon.yaml', join(dir, 'absent.sock'), kek);
    const run = await portcullis(['doctor', '--config', config]);
    assert.equal(run.status, 1, run.stderr);
    const lines = run.stdout.trimEnd().split('\n');
    for (const line of lines) assert.match(line, /^(ok {2}|warn|FAIL) {2}\S/, line);
    assert.match(run.stdout, /^ok {4}config {6}.*no-daemon\.yaml: backend local, socket .*absent\.sock$/m);
    assert.match(run.stdout, /^(ok|FAIL) +cryptsetup +.+/m);
    assert.match(run.stdout, /^(ok +dm-crypt .+|FAIL +dm-crypt +.+ — modprobe dm-crypt.*)$/m);
    assert.match(run.stdout, /^FAIL +socket +no socket at .*absent\.sock \(socket\.path in .*no-daemon\.yaml\) — start the daemon: systemctl start portcullis/m);
    assert.match(run.stdout, /^FAIL +daemon +not reachable.* — start portcullisd, then run portcullis doctor again$/m);
    assert.match(run.stdout, /^ok +KEK +.*kek-ok: mode 0600, owner root, 32 bytes$/m);
    for (const line of lines.filter((l) => l.startsWith('FAIL'))) assert.match(line, / — \S/, `a FAIL without a hint: ${line}`);
  });

  it('a KEK readable by others is a FAIL with the chmod 600 hint', async () => {
    const kek = join(dir, 'kek-open');
    writeFileSync(kek, Buffer.alloc(32, 7));
    chmodSync(kek, 0o644);
    const run = await portcullis(['doctor', '--config', writeConfig('open-kek.yaml', join(dir, 'absent.sock'), kek), '--json']);
    assert.equal(run.status, 1, run.stderr);
    const report = JSON.parse(run.stdout) as { ok: boolean; checks: Finding[] };
    assert.equal(report.ok, false);
    const kekFinding = report.checks.find((f) => f.check === 'KEK');
    assert.equal(kekFinding?.verdict, 'fail');
    assert.match(kekFinding?.detail ?? '', /mode 0644/);
    assert.equal(kekFinding?.hint, `chmod 600 ${kek}`);
  });

  it('a missing config at a named path is a FAIL line, and the rest of the checks still run', async () => {
    const run = await portcullis(['doctor', '--config', join(dir, 'nope.yaml'), '--socket', join(dir, 'absent.sock'), '--json']);
    assert.equal(run.status, 1, run.stderr);
    const report = JSON.parse(run.stdout) as { ok: boolean; checks: Finding[] };
    assert.deepEqual(report.checks.map((f) => f.check).slice(0, 4), ['config', 'cryptsetup', 'dm-crypt', 'socket']);
    assert.equal(report.checks[0]?.verdict, 'fail');
    assert.match(report.checks[0]?.detail ?? '', /E_CONFIG_NOT_FOUND|Cannot read config file/);
  });

  it("reports the daemon's health and key-manager reachability through the socket", async () => {
    const standIn = await startStandIn();
    try {
      const kek = join(dir, 'kek-ok');
      writeFileSync(kek, Buffer.alloc(32, 7), { mode: 0o600 });
      const degraded = { ...healthOk, status: 'degraded', checks: { ...healthOk.checks, key_manager: { ok: false, detail: 'unreachable (E_BACKEND_UNAVAILABLE)' } } };
      standIn.answer('GET', '/v1/health', { json: degraded });
      const run = await portcullis(['doctor', '--config', writeConfig('stand-in.yaml', standIn.socketPath, kek), '--json']);
      const report = JSON.parse(run.stdout) as { ok: boolean; checks: Finding[] };
      const byCheck = new Map(report.checks.map((f) => [f.check, f]));
      assert.equal(byCheck.get('socket')?.verdict, 'ok');
      assert.equal(byCheck.get('daemon')?.verdict, 'warn');
      assert.match(byCheck.get('daemon')?.detail ?? '', /portcullisd 0\.1\.0-stand-in.*health degraded/);
      assert.equal(byCheck.get('daemon: dm-crypt')?.verdict, 'ok');
      const backend = byCheck.get('backend reachable');
      assert.equal(backend?.verdict, 'fail');
      assert.match(backend?.hint ?? '', /key manager is up and reachable/);
      assert.equal(run.status, 1, 'a FAIL line means exit 1');
    } finally {
      await standIn.close();
    }
  });

  it('a socket with another mode than socket.mode is a warning, not a failure', async () => {
    const standIn = await startStandIn();
    try {
      chmodSync(standIn.socketPath, 0o666);
      const kek = join(dir, 'kek-ok');
      const run = await portcullis(['doctor', '--config', writeConfig('mode.yaml', standIn.socketPath, kek)]);
      assert.match(run.stdout, /^warn +socket mode +.*has mode 0666, socket\.mode says 0660 — restart portcullisd/m);
    } finally {
      await standIn.close();
    }
  });
});
