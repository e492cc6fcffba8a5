/**
 * `make install` and `make uninstall`: staged under DESTDIR as a package
 * build would, and installed under a private PREFIX where the result must run
 * on its own, without the checkout.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parse, stringify } from 'yaml';
import { request } from '../fixtures/daemon.js';
import { daemonIsReady, make, repoRoot, spawnDaemon, tempDir } from './helpers.js';

/** Every file and symlink under `root`, relative to it, sorted. */
function files(root: string): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path);
      else out.push(relative(root, path));
    }
  };
  walk(root);
  return out.sort();
}

const mode = (path: string) => statSync(path).mode & 0o777;
const version = (JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { version: string }).version;

describe('make install DESTDIR=... PREFIX=/usr/local', () => {
  let dest: string;
  before(() => {
    dest = tempDir('destdir');
    make(['install', `DESTDIR=${dest}`, 'PREFIX=/usr/local']);
  });
  after(() => rmSync(dest, { recursive: true, force: true }));

  it('stages wrappers, units, sysusers.d and tmpfiles.d entries, man pages and the config, with their modes', () => {
    const expected: Array<[string, number]> = [
      ['usr/local/bin/portcullis', 0o755],
      ['usr/local/sbin/portcullisd', 0o755],
      ['usr/local/lib/systemd/system/portcullis.service', 0o644],
      ['usr/local/lib/systemd/system/portcullis.socket', 0o644],
      ['usr/local/lib/systemd/system/portcullis-helper.service', 0o644],
      ['usr/local/lib/systemd/system/portcullis-helper.socket', 0o644],
      ['usr/local/lib/portcullis/helper/portcullis-helper', 0o755],
      ['usr/local/lib/sysusers.d/portcullis.conf', 0o644],
      ['usr/local/lib/tmpfiles.d/portcullis.conf', 0o644],
      ['usr/local/share/man/man8/portcullis.8', 0o644],
      ['usr/local/share/man/man8/portcullisd.8', 0o644],
      ['etc/portcullis/portcullis.yaml', 0o644],
      ['usr/local/lib/portcullis/package.json', 0o644],
      ['usr/local/lib/portcullis/native/build/Release/portcullis_native.node', 0o755],
      ['usr/local/lib/portcullis/dist/src/daemon/portcullisd.js', 0o644],
    ];
    assert.deepEqual(expected.map(([path]) => [path, mode(join(dest, path))]), expected);
    const outside = files(dest).filter((f) => !f.startsWith('usr/local/lib/portcullis/'));
    assert.deepEqual(outside, expected.map(([path]) => path).filter((p) => !p.startsWith('usr/local/lib/portcullis/')).sort());
  });

  it('writes wrappers that exec node on the installed entry points by their final paths', () => {
    for (const [wrapper, entry] of [['usr/local/bin/portcullis', 'dist/src/cli/main.js'], ['usr/local/sbin/portcullisd', 'dist/src/daemon/portcullisd.js']] as const) {
      const text = readFileSync(join(dest, wrapper), 'utf8');
      const exec = /^exec (\S+) (\S+) "\$@"$/m.exec(text);
      assert.ok(exec?.[1] !== undefined && exec[2] !== undefined, text);
      assert.ok(text.startsWith('#!/bin/sh\n'));
      assert.equal(exec[2], `/usr/local/lib/portcullis/${entry}`);
      assert.ok(existsSync(join(dest, exec[2])), `${exec[2]} is staged`);
      assert.ok(exec[1].startsWith('/') && existsSync(exec[1]), `node at ${exec[1]}`);
    }
  });

  it('fills in the unit: the installed portcullisd, the config and the KEK under /etc, no placeholder left', () => {
    const unit = readFileSync(join(dest, 'usr/local/lib/systemd/system/portcullis.service'), 'utf8');
    assert.doesNotMatch(unit, /@[A-Z]+@/);
    assert.match(unit, /^ExecStart=\/usr\/local\/sbin\/portcullisd --config \/etc\/portcullis\/portcullis\.yaml$/m);
    assert.match(unit, /^ExecStartPre=\/usr\/local\/sbin\/portcullisd --check-config --config \/etc\/portcullis\/portcullis\.yaml$/m);
    assert.match(unit, /^LoadCredential=kek:\/etc\/portcullis\/kek$/m);
    const helper = readFileSync(join(dest, 'usr/local/lib/systemd/system/portcullis-helper.service'), 'utf8');
    assert.doesNotMatch(helper, /@[A-Z]+@/);
    const exec = /^ExecStart=(\S+) /m.exec(helper);
    assert.equal(exec?.[1], '/usr/local/lib/portcullis/helper/portcullis-helper');
    assert.ok(existsSync(join(dest, exec[1])), 'the helper the unit runs is staged');
  });

  it('installs the production dependencies only, and neither tests nor source maps', () => {
    const lib = join(dest, 'usr/local/lib/portcullis');
    for (const dep of ['better-sqlite3', 'prom-client', 'winston', 'yaml', 'zod']) assert.ok(existsSync(join(lib, 'node_modules', dep, 'package.json')), dep);
    for (const dev of ['typescript', '@types/node', '@types/better-sqlite3']) assert.ok(!existsSync(join(lib, 'node_modules', dev)), dev);
    const installed = files(lib);
    assert.deepEqual(installed.filter((f) => f.startsWith('dist/test') || f.startsWith('dist/scripts') || f.startsWith('dist/bench')), []);
    assert.deepEqual(installed.filter((f) => f.startsWith('dist/') && f.endsWith('.map')), []);
  });

  it('keeps an existing config when installed again', () => {
    const config = join(dest, 'etc/portcullis/portcullis.yaml');
    writeFileSync(config, '# edited by the operator\n');
    const out = make(['install', `DESTDIR=${dest}`, 'PREFIX=/usr/local']);
    assert.equal(readFileSync(config, 'utf8'), '# edited by the operator\n');
    assert.match(out, /kept the existing .*portcullis\.yaml/);
  });

  it('make uninstall removes every file install put there, and keeps the config', () => {
    make(['uninstall', `DESTDIR=${dest}`, 'PREFIX=/usr/local']);
    assert.deepEqual(files(dest), ['etc/portcullis/portcullis.yaml']);
  });
});

describe('make install PREFIX=<private dir>: the installed tree runs on its own', () => {
  let root: string;
  let sbin: string;
  let bin: string;
  let configPath: string;
  before(() => {
    root = tempDir('prefix');
    make(['install', `PREFIX=${root}/usr`, `SYSCONFDIR=${root}/etc`]);
    bin = join(root, 'usr/bin/portcullis');
    sbin = join(root, 'usr/sbin/portcullisd');
    configPath = join(root, 'etc/portcullis/portcullis.yaml');
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  const run = (command: string, args: string[]) => spawnSync(command, args, { cwd: '/', encoding: 'utf8', env: { PATH: '/usr/bin:/bin' } });

  it('portcullis --help prints the usage', () => {
    const result = run(bin, ['--help']);
    assert.equal(result.status, 0, result.stderr);
    assert.match(result.stdout, /^Usage: portcullis COMMAND \[OPTIONS\]/);
  });

  it('portcullisd --version prints the package version', () => {
    const result = run(sbin, ['--version']);
    assert.equal(result.stdout, `portcullisd ${version}\n`);
  });

  it('portcullisd --check-config accepts the installed default config as it is', () => {
    const result = run(sbin, ['--check-config', '--config', configPath]);
    assert.equal(result.status, 0, result.stderr);
    assert.match(result.stdout, new RegExp(`^config OK: ${configPath}\n  backend local, socket /run/portcullis/portcullis.sock \\(mode 0660, group portcullis\\)`));
  });

  it('portcullisd serves from the installed tree alone: its addon and better-sqlite3 are the installed ones', async (t) => {
    // The default config with this test's paths: keystore and socket under root, no portcullis group here;
    // no helper unit either: run by hand as root, portcullisd starts the installed helper itself.
    const config = parse(readFileSync(configPath, 'utf8')) as { key_manager: { local: { path: string } }; socket: Record<string, unknown>; luks?: unknown };
    config.key_manager.local.path = join(root, 'var/lib/portcullis/keystore.db');
    config.socket = { path: join(root, 'portcullis.sock') };
    delete config.luks;
    const adjusted = join(root, 'etc/portcullis/test.yaml');
    writeFileSync(adjusted, stringify(config));
    mkdirSync(join(root, 'var/lib/portcullis'), { recursive: true, mode: 0o700 });
    const credentials = join(root, 'credentials');
    mkdirSync(credentials, { mode: 0o700 });
    writeFileSync(join(credentials, 'kek'), randomBytes(32), { mode: 0o400 });

    const daemon = spawnDaemon([sbin, '--config', adjusted], { CREDENTIALS_DIRECTORY: credentials });
    t.after(() => daemon.stop('SIGKILL'));
    await daemon.waitForLog(daemonIsReady);
    const health = await request(join(root, 'portcullis.sock'), 'GET', '/v1/health');
    assert.equal((health.body as { checks?: { key_manager?: { ok: boolean } } }).checks?.key_manager?.ok, true, health.text);
    const maps = readFileSync(`/proc/${daemon.pid}/maps`, 'utf8');
    assert.ok(maps.includes(join(root, 'usr/lib/portcullis/native/build/Release/portcullis_native.node')), 'the installed addon is loaded');
    assert.ok(maps.includes(join(root, 'usr/lib/portcullis/node_modules/better-sqlite3/build/Release/better_sqlite3.node')), 'the installed better-sqlite3 is loaded');
    assert.ok(!maps.includes(repoRoot), 'nothing is loaded from the checkout');
    const children = readFileSync(`/proc/${daemon.pid}/task/${daemon.pid}/children`, 'utf8').trim().split(/\s+/);
    assert.deepEqual(children.map((pid) => readlinkSync(`/proc/${pid}/exe`)), [join(root, 'usr/lib/portcullis/helper/portcullis-helper')], 'the installed helper is its one child');
    assert.equal(await daemon.stop(), 0);
  });
});

describe('systemd-sysusers and systemd-tmpfiles on an installed tree (--root=DESTDIR)', () => {
  let dest: string;
  before(() => {
    dest = tempDir('sysusers');
    make(['install', `DESTDIR=${dest}`, 'PREFIX=/usr/local']);
  });
  after(() => rmSync(dest, { recursive: true, force: true }));

  it('systemd-sysusers finds the entry under /usr/local/lib/sysusers.d and creates the user and group portcullis, with no login', () => {
    const result = spawnSync('systemd-sysusers', [`--root=${dest}`], { encoding: 'utf8' });
    assert.equal(result.status, 0, result.stderr);
    const group = /^portcullis:x:(\d+):$/m.exec(readFileSync(join(dest, 'etc/group'), 'utf8'));
    assert.ok(group?.[1], 'the group');
    const user = /^portcullis:x:(\d+):(\d+):[^:]*:\/var\/lib\/portcullis:(\S+)$/m.exec(readFileSync(join(dest, 'etc/passwd'), 'utf8'));
    assert.ok(user !== null, 'the user');
    assert.notEqual(user[1], '0');
    assert.equal(user[2], group[1], 'its primary group is portcullis');
    assert.match(user[3] ?? '', /nologin$/);
  });

  it('systemd-tmpfiles --create portcullis.conf finds the entry under /usr/local/lib/tmpfiles.d and makes both directories with their modes, the user\'s', () => {
    const result = spawnSync('systemd-tmpfiles', [`--root=${dest}`, '--create', 'portcullis.conf'], { encoding: 'utf8' });
    assert.equal(result.status, 0, result.stderr);
    assert.deepEqual([mode(join(dest, 'run/portcullis')), mode(join(dest, 'var/lib/portcullis'))], [0o755, 0o700]);
    const uid = Number(/^portcullis:x:(\d+):/m.exec(readFileSync(join(dest, 'etc/passwd'), 'utf8'))?.[1]);
    assert.deepEqual([statSync(join(dest, 'run/portcullis')).uid, statSync(join(dest, 'var/lib/portcullis')).uid], [uid, uid]);
  });
});
