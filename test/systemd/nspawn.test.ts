/**
 * The installed units under a real systemd: `make install DESTDIR=...`, then
 * systemd-nspawn boots systemd as PID 1 in a container over this host's /usr
 * (--volatile=yes), with the staged /usr/local and /etc/portcullis bound in.
 * What the other files can only argue — Type=notify, the watchdog killing a
 * frozen daemon, socket activation by systemd, the credential, the daemon
 * as the user portcullis reaching the privileged helper that systemd runs
 * as root, the sandboxes both actually run in — is observed here.
 *
 * Not here: device-mapper (this host class has none, so no attach runs under
 * the unit) and DeviceAllow= (nothing to open).
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, afterEach, before, describe, it } from 'node:test';
import { writeDiagnostics } from '../fixtures/diagnostics.js';
import { waitForMatch } from '../helpers/wait.js';
import { isRoot, make, tempDir } from './helpers.js';

const NSPAWN = '/usr/bin/systemd-nspawn';
const SOCKET = '/run/portcullis/portcullis.sock';
const HELPER_SOCKET = '/run/portcullis-helper/helper.sock';

/** Why the container cannot run here, or undefined when it can. */
function unavailable(): string | undefined {
  if (!isRoot) return 'needs root';
  if (!existsSync(NSPAWN)) return 'needs systemd-nspawn (Debian package systemd-container)';
  const probe = spawnSync(NSPAWN, ['-D', '/', '--volatile=yes', '--register=no', '--keep-unit', '-q', '/bin/true'], { encoding: 'utf8', timeout: 60_000 });
  return probe.status === 0 ? undefined : `systemd-nspawn cannot start a container here: ${probe.stderr.trim().split('\n')[0] ?? ''}`;
}

/** A process's name, or undefined once it has gone (nspawn's short-lived helpers do). */
function commOf(pid: string): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return undefined;
  }
}

/** A request from inside the container, with the container's node: prints "STATUS BODY". */
const REQUEST = `
  const req = require('node:http').request({ socketPath: process.argv[1], path: process.argv[2] }, (res) => {
    let body = ''; res.on('data', (c) => (body += c)); res.on('end', () => process.stdout.write(res.statusCode + ' ' + body));
  });
  req.on('error', (e) => process.stdout.write('error ' + e.code));
  req.end();`;

describe('the installed units under systemd (systemd-nspawn)', { skip: unavailable() }, () => {
  let dest: string;
  let nspawn: ChildProcess;
  let consoleLog = '';
  let leader = 0;

  /** Runs argv inside the container (all its namespaces); throws when it fails and `check` is set. */
  function inside(argv: string[], check = true): { status: number | null; stdout: string; stderr: string } {
    const result = spawnSync('nsenter', ['--target', String(leader), '--all', ...argv], { encoding: 'utf8', timeout: 120_000 });
    if (check && result.status !== 0) throw new Error(`${argv.join(' ')} failed (${String(result.status)}): ${result.stdout}${result.stderr}`);
    return { status: result.status, stdout: result.stdout, stderr: result.stderr };
  }
  const show = (property: string, unit = 'portcullis.service') => inside(['systemctl', 'show', '-P', property, unit]).stdout.trim();
  const mainPid = (unit = 'portcullis.service') => show('MainPID', unit);
  /** argv inside the mount namespace of the daemon itself: what the unit's sandbox made of the file system. */
  const inDaemon = (argv: string[], check = true) => inside(['nsenter', '--target', mainPid(), '--mount', ...argv], check);
  const get = (path: string) => inside(['node', '-e', REQUEST, SOCKET, path]).stdout;
  const journal = () => inside(['journalctl', '--no-pager', '-o', 'cat', '-u', 'portcullis.service']).stdout;
  /** What an operator would look at first: both units' status and the container's recent journal. */
  const diagnosis = () =>
    [
      inside(['systemctl', 'status', '--no-pager', '-l', 'portcullis.socket', 'portcullis.service', 'portcullis-helper.socket', 'portcullis-helper.service'], false).stdout,
      inside(['journalctl', '--no-pager', '-o', 'short-monotonic', '-n', '120'], false).stdout,
    ].join('\n');

  /** journald takes a line some time after the daemon wrote it: wait for it, bounded. */
  const journalShows = (pattern: RegExp) => waitForMatch('the unit\'s journal', journal, pattern, { timeoutMs: 30_000, intervalMs: 250 });

  async function until(what: string, test: () => boolean, ms = 60_000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!test()) {
      if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms\n${journal()}`);
      await sleep(200);
    }
  }

  before(async () => {
    dest = tempDir('nspawn');
    make(['install', `DESTDIR=${dest}`, 'PREFIX=/usr/local']);
    writeFileSync(join(dest, 'etc/portcullis/kek'), randomBytes(32), { mode: 0o600 }); // docs/install.md, step 3
    nspawn = spawn(NSPAWN, [
      '-D', '/', '--volatile=yes', '--register=no', '--keep-unit', '-q',
      `--machine=portcullis-${randomBytes(3).toString('hex')}`,
      // nspawn keeps CAP_IPC_LOCK (and the mlock system calls) from containers unless asked; a host's PID 1 has it.
      '--capability=CAP_IPC_LOCK',
      `--bind-ro=${join(dest, 'usr/local')}:/usr/local`,
      `--bind=${join(dest, 'etc/portcullis')}:/etc/portcullis`,
      '-b', '--', 'systemd.firstboot=off',
    ], { stdio: ['ignore', 'pipe', 'pipe'] });
    nspawn.stdout?.on('data', (c: Buffer) => (consoleLog += c.toString()));
    nspawn.stderr?.on('data', (c: Buffer) => (consoleLog += c.toString()));
    const deadline = Date.now() + 60_000;
    while (leader === 0) {
      if (Date.now() > deadline || nspawn.exitCode !== null) throw new Error(`the container did not boot:\n${consoleLog}`);
      const children = spawnSync('pgrep', ['-P', String(nspawn.pid)], { encoding: 'utf8' }).stdout.trim().split('\n').filter((p) => p !== '');
      leader = Number(children.find((p) => commOf(p) === 'systemd') ?? 0);
      await sleep(200);
    }
    // PID 1 exists before its bus does: until /run/systemd/private listens, systemctl (and --wait) fail at once.
    const state = () => inside(['systemctl', 'is-system-running'], false).stdout.trim();
    // ("offline" is systemctl's word for "no bus to ask").
    await until('systemd in the container answering on its bus', () => !['', 'offline'].includes(state()), 120_000);
    // Returns once boot has finished, "running" or "degraded" (units this bare container cannot run).
    const booted = inside(['systemctl', 'is-system-running', '--wait'], false).stdout.trim();
    if (booted !== 'running' && booted !== 'degraded') throw new Error(`the container did not finish booting (${booted}):\n${consoleLog}\n${journal()}`);
  });

  // A failure here usually depends on the host (its kernel, its sandbox): keep what the container saw.
  afterEach((t) => {
    // Node 20's context has `passed`; @types/node does not declare it yet.
    if ((t as { passed?: boolean }).passed === false && leader !== 0) writeDiagnostics(`nspawn: ${t.name}`, diagnosis());
  });

  after(async () => {
    if (leader !== 0) inside(['systemctl', 'poweroff'], false);
    if (nspawn !== undefined && nspawn.exitCode === null) {
      const timer = setTimeout(() => nspawn.kill('SIGKILL'), 60_000);
      await new Promise((resolve) => nspawn.once('exit', resolve));
      clearTimeout(timer);
    }
    if (dest !== undefined) rmSync(dest, { recursive: true, force: true });
  });

  it('the units came up at boot (an empty /etc enables them by preset), the sockets 0660 root:portcullis and 0600 portcullis, with the user from sysusers.d', () => {
    const units = ['portcullis.socket', 'portcullis.service', 'portcullis-helper.socket', 'portcullis-helper.service'];
    // The daemon's start connected to the helper's socket, which started the helper.
    assert.deepEqual(units.map((u) => show('ActiveState', u)), ['active', 'active', 'active', 'active'], journal());
    assert.match(inside(['getent', 'group', 'portcullis']).stdout, /^portcullis:x:\d+:/);
    assert.match(inside(['getent', 'passwd', 'portcullis']).stdout, /^portcullis:x:[1-9]\d*:\d+:[^:]*:\/var\/lib\/portcullis:/);
    assert.equal(inside(['stat', '-c', '%F %a %U %G', SOCKET]).stdout.trim(), 'socket 660 root portcullis');
    assert.equal(inside(['stat', '-c', '%F %a %U %G', HELPER_SOCKET]).stdout.trim(), 'socket 600 portcullis portcullis');
    // From here on the daemon is started by a client, as socket activation does.
    inside(['systemctl', 'stop', 'portcullis.service']);
    assert.equal(show('ActiveState'), 'inactive');
    assert.equal(inside(['stat', '-c', '%F', SOCKET]).stdout.trim(), 'socket', 'RuntimeDirectoryPreserve= kept the socket');
  });

  it('the first connection starts the service, which answers it and is active with its STATUS= line (Type=notify)', async () => {
    const answer = get('/v1/health');
    assert.match(answer, /^(200|503) \{/, 'the connection waits in the backlog until the daemon answers');
    const health = JSON.parse(answer.slice(answer.indexOf(' ') + 1)) as { backend: string; checks: Record<string, { ok: boolean; detail: string }> };
    assert.equal(health.backend, 'local');
    // The daemon serves the queued connection right after sending READY=1; systemd may read that datagram a moment later.
    await until('the service active after READY=1', () => show('ActiveState') === 'active', 10_000);
    assert.equal(show('SubState'), 'running');
    assert.match(show('StatusText'), /^serving on \/run\/portcullis\/portcullis\.sock, backend local, \d+ mapping\(s\) adopted$/);
    await journalShows(/"message":"portcullisd ready".*"via":"systemd"/);
    assert.equal(show('NRestarts'), '0', 'the daemon has not been restarted');
  });

  it("inside the sandbox the keystore opens with the KEK credential, and the helper's libcryptsetup answers", () => {
    const answer = get('/v1/health');
    const health = JSON.parse(answer.slice(answer.indexOf(' ') + 1)) as { checks: Record<string, { ok: boolean; detail: string }> };
    assert.deepEqual(health.checks['key_manager'], { ok: true, detail: 'local keystore /var/lib/portcullis/keystore.db: 0 object(s)' });
    assert.equal(health.checks['cryptsetup']?.ok, true, health.checks['cryptsetup']?.detail);
    const environ = inside(['cat', `/proc/${mainPid()}/environ`]).stdout.split('\0');
    const credentials = environ.find((e) => e.startsWith('CREDENTIALS_DIRECTORY='))?.slice('CREDENTIALS_DIRECTORY='.length);
    assert.ok(credentials, environ.join(' '));
    // systemd hands the credential to the service's user.
    assert.equal(inside(['stat', '-c', '%a %U %s', join(credentials, 'kek')]).stdout.trim(), '400 portcullis 32');
  });

  it("the daemon runs as portcullis with CAP_IPC_LOCK alone, no new privileges, a seccomp filter, and WATCHDOG_USEC", async () => {
    assert.equal(show('User'), 'portcullis');
    const uid = inside(['id', '-u', 'portcullis']).stdout.trim();
    const status = inside(['cat', `/proc/${mainPid()}/status`]).stdout;
    assert.match(status, new RegExp(`^Uid:\\s+${uid}\\s+${uid}\\s+${uid}\\s+${uid}$`, 'm'));
    // CAP_IPC_LOCK (14), ambient: the only one.
    assert.match(status, /^CapBnd:\s+0000000000004000$/m);
    assert.match(status, /^CapEff:\s+0000000000004000$/m);
    assert.match(status, /^NoNewPrivs:\s+1$/m);
    assert.match(status, /^Seccomp:\s+2$/m);
    await journalShows(/"interval_ms":15000,.*"watchdog_usec":30000000/);
  });

  it('the helper runs as root with CAP_SYS_ADMIN and CAP_IPC_LOCK alone, no new privileges, a seccomp filter, and serves the daemon over its socket', () => {
    const status = inside(['cat', `/proc/${mainPid('portcullis-helper.service')}/status`]).stdout;
    assert.match(status, /^Uid:\s+0\s+0\s+0\s+0$/m);
    // CAP_IPC_LOCK (14), CAP_SYS_ADMIN (21)
    assert.match(status, /^CapBnd:\s+0000000000204000$/m);
    assert.match(status, /^CapEff:\s+0000000000204000$/m);
    assert.match(status, /^NoNewPrivs:\s+1$/m);
    assert.match(status, /^Seccomp:\s+2$/m);
    const helperJournal = inside(['journalctl', '--no-pager', '-o', 'cat', '-u', 'portcullis-helper.service']).stdout;
    assert.match(helperJournal, /"event":"op_done","op":"HELLO"/);
  });

  it('the file system is as the units say: config and KEK read-only, state and runtime writable and the daemon\'s, no homes, a private /tmp; cryptsetup\'s locks writable for the helper', () => {
    assert.match(inDaemon(['touch', '/etc/portcullis/probe'], false).stderr, /Read-only file system/);
    assert.match(inDaemon(['touch', '/usr/local/probe'], false).stderr, /Read-only file system/);
    inDaemon(['touch', '/var/lib/portcullis/probe', '/run/portcullis/probe']);
    inDaemon(['rm', '/var/lib/portcullis/probe', '/run/portcullis/probe']);
    const inHelper = (argv: string[]) => inside(['nsenter', '--target', mainPid('portcullis-helper.service'), '--mount', ...argv]);
    inHelper(['touch', '/run/cryptsetup/probe']);
    inHelper(['rm', '/run/cryptsetup/probe']);
    assert.equal(inDaemon(['stat', '-c', '%a', '/home', '/root']).stdout, '0\n0\n');
    assert.equal(inDaemon(['stat', '-c', '%a %U', '/var/lib/portcullis', '/run/portcullis']).stdout, '700 portcullis\n755 portcullis\n');
    inside(['touch', '/tmp/portcullis-outside']);
    assert.equal(inDaemon(['test', '-e', '/tmp/portcullis-outside'], false).status, 1, "the container's /tmp is not the daemon's");
  });

  it('systemctl reload re-reads the config (RELOADING=1, then READY=1) without a restart', async () => {
    const pid = mainPid();
    inside(['systemctl', 'reload', 'portcullis.service']);
    assert.equal(mainPid(), pid);
    await journalShows(/"message":"config reloaded"/);
  });

  describe('with WatchdogSec=6s', () => {
    before(() => {
      inside(['mkdir', '-p', '/run/systemd/system/portcullis.service.d']);
      inside(['sh', '-c', 'printf "[Service]\\nWatchdogSec=6s\\n" > /run/systemd/system/portcullis.service.d/watchdog.conf']);
      inside(['systemctl', 'daemon-reload']);
      inside(['systemctl', 'restart', 'portcullis.service']);
    });

    it('a daemon that pings is left alone: no restart across more than twice the watchdog', async () => {
      const restarts = show('NRestarts');
      const pid = mainPid();
      await sleep(14_000);
      assert.deepEqual([show('NRestarts'), mainPid(), show('ActiveState')], [restarts, pid, 'active']);
    });

    it('a daemon frozen by SIGSTOP is killed by the watchdog and restarted, and the socket stays where it was', async () => {
      const restarts = Number(show('NRestarts'));
      const pid = mainPid();
      inside(['kill', '-STOP', pid]);
      await until('a watchdog restart', () => Number(show('NRestarts')) > restarts && show('ActiveState') === 'active' && mainPid() !== pid);
      await journalShows(/portcullis\.service: Watchdog timeout \(limit 6s\)!/);
      await journalShows(/Failed with result 'watchdog'/);
      assert.equal(inside(['stat', '-c', '%F', SOCKET]).stdout.trim(), 'socket');
      assert.match(get('/v1/health'), /^(200|503) /);
    });
  });

  it('without /etc/portcullis/kek the service does not start at all (the credential is missing), and starts once it is back', async () => {
    const kek = join(dest, 'etc/portcullis/kek');
    const saved = readFileSync(kek);
    rmSync(kek);
    try {
      assert.notEqual(inside(['systemctl', 'restart', 'portcullis.service'], false).status, 0);
      assert.equal(show('Result'), 'exit-code');
      await journalShows(/Failed at step CREDENTIALS spawning \/usr\/local\/sbin\/portcullisd/);
      await journalShows(/status=243\/CREDENTIALS/);
    } finally {
      writeFileSync(kek, saved, { mode: 0o600 });
    }
    inside(['systemctl', 'reset-failed', 'portcullis.service']);
    inside(['systemctl', 'start', 'portcullis.service']);
    assert.equal(show('ActiveState'), 'active');
  });

  it('systemctl stop sends SIGTERM, the daemon drains and exits 0, and the socket stays for the next start', async () => {
    inside(['systemctl', 'stop', 'portcullis.service']);
    assert.equal(show('ActiveState'), 'inactive');
    assert.equal(show('ExecMainStatus'), '0');
    await journalShows(/"message":"portcullisd stopped"/);
    assert.equal(inside(['stat', '-c', '%F', SOCKET]).stdout.trim(), 'socket');
    assert.equal(show('ActiveState', 'portcullis.socket'), 'active');
  });
});
