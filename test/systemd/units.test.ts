/**
 * The files in systemd/: the units as systemd-analyze(1) verifies them once
 * installed, the settings they must agree on with each other and with the
 * default config, and the default config as portcullisd --check-config sees it.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parse } from 'yaml';
import { DEFAULT_SOCKET_PATH } from '../../src/config/daemon-options.js';
import { make, repoRoot, tempDir } from './helpers.js';

const read = (name: string) => readFileSync(join(repoRoot, 'systemd', name), 'utf8');

/** KEY=VALUE lines of a unit (comments and sections dropped), every value of each key. */
function directives(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const line of text.split('\n')) {
    const match = /^([A-Za-z]+)=(.*)$/.exec(line.trim());
    if (match?.[1] === undefined || match[2] === undefined) continue;
    out.set(match[1], [...(out.get(match[1]) ?? []), match[2]]);
  }
  return out;
}

const one = (map: Map<string, string[]>, key: string): string => {
  const values = map.get(key);
  assert.equal(values?.length, 1, `${key}= once, got ${JSON.stringify(values)}`);
  return values[0] as string;
};

describe('systemd-analyze verify', () => {
  let prefix: string;
  before(() => {
    // Installed into a private prefix (no DESTDIR), so ExecStart= names an executable that exists.
    prefix = tempDir('verify');
    make(['install', `PREFIX=${prefix}/usr`, `SYSCONFDIR=${prefix}/etc`]);
  });
  after(() => rmSync(prefix, { recursive: true, force: true }));

  const verify = (files: string[]) => spawnSync('systemd-analyze', ['verify', '--man=no', ...files], { encoding: 'utf8', timeout: 120_000 });

  it('finds nothing to report in the installed units: portcullis and portcullis-helper, service and socket', () => {
    const units = join(prefix, 'usr', 'lib', 'systemd', 'system');
    const result = verify(['portcullis.service', 'portcullis.socket', 'portcullis-helper.service', 'portcullis-helper.socket'].map((u) => join(units, u)));
    assert.equal(result.stderr, '');
    assert.equal(result.status, 0);
  });

  it('does report the uninstalled template, whose ExecStart= is no path, so a clean run above means something', () => {
    const dir = tempDir('verify-template');
    try {
      // The template itself: @SBINDIR@ is not a path.
      const copy = join(dir, 'portcullis.service');
      spawnSync('cp', [join(repoRoot, 'systemd', 'portcullis.service.in'), copy]);
      spawnSync('cp', [join(repoRoot, 'systemd', 'portcullis.socket'), join(dir, 'portcullis.socket')]);
      const result = verify([copy]);
      assert.notEqual(result.status, 0);
      assert.match(result.stderr, /portcullis\.service:\d+: .*SBINDIR@\/portcullisd/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('the units and the default config agree', () => {
  const service = directives(read('portcullis.service.in'));
  const socket = directives(read('portcullis.socket'));
  const helper = directives(read('portcullis-helper.service.in'));
  const helperSocket = directives(read('portcullis-helper.socket'));
  const config = parse(read('portcullis.yaml')) as {
    socket: { path: string; mode: string; group: string };
    luks: { helper_socket: string };
    key_manager: { backend: string; local: { path: string; kek_credential: string } };
  };

  it('portcullis.socket listens where the config and the daemon look: /run/portcullis/portcullis.sock', () => {
    assert.equal(one(socket, 'ListenStream'), DEFAULT_SOCKET_PATH);
    assert.equal(config.socket.path, DEFAULT_SOCKET_PATH);
  });

  it('the socket has the mode and group the config names, and sysusers.d creates that group', () => {
    assert.equal(one(socket, 'SocketMode'), config.socket.mode);
    assert.equal(one(socket, 'SocketGroup'), config.socket.group);
    // A `u` line makes the user and its group of the same name.
    assert.equal(one(service, 'User'), config.socket.group);
    assert.match(read('portcullis.sysusers'), new RegExp(`^u ${config.socket.group} - `, 'm'));
  });

  it('the daemon reaches the helper where its socket unit listens, as a user the helper and the socket both let in', () => {
    assert.equal(one(helperSocket, 'ListenStream'), config.luks.helper_socket);
    assert.equal(one(helperSocket, 'Service'), 'portcullis-helper.service');
    assert.equal(one(helperSocket, 'SocketUser'), one(service, 'User'));
    assert.equal(one(helperSocket, 'SocketMode'), '0600');
    const argv = one(helper, 'ExecStart').split(/\s+/);
    assert.equal(argv[argv.indexOf('--allow-user') + 1], one(service, 'User'));
    assert.ok(argv.includes('--listen'), argv.join(' '));
    assert.deepEqual(one(service, 'Requires').split(/\s+/).sort(), ['portcullis-helper.socket', 'portcullis.socket']);
    assert.match(one(service, 'Also'), /portcullis-helper\.socket/);
  });

  it('the privilege boundary: the daemon has CAP_IPC_LOCK alone and no device; only the helper has CAP_SYS_ADMIN and the block devices, and no IP', () => {
    assert.equal(one(service, 'CapabilityBoundingSet'), 'CAP_IPC_LOCK');
    assert.equal(one(service, 'AmbientCapabilities'), 'CAP_IPC_LOCK');
    assert.equal(one(service, 'DevicePolicy'), 'closed');
    assert.equal(service.get('DeviceAllow'), undefined);
    assert.equal(helper.get('User'), undefined, 'the helper is root');
    assert.deepEqual(one(helper, 'CapabilityBoundingSet').split(/\s+/).sort(), ['CAP_IPC_LOCK', 'CAP_SYS_ADMIN']);
    assert.deepEqual(helper.get('DeviceAllow'), ['block-* rw', '/dev/mapper/control rw']);
    assert.equal(one(helper, 'IPAddressDeny'), 'any');
    assert.ok(!one(helper, 'RestrictAddressFamilies').includes('AF_INET'), one(helper, 'RestrictAddressFamilies'));
  });

  it('the KEK credential the unit loads is the one the config reads', () => {
    const [name] = one(service, 'LoadCredential').split(':');
    assert.equal(config.key_manager.local.kek_credential, name);
    assert.equal(config.key_manager.backend, 'local');
  });

  it('the directories have one mode wherever they are made: unit, socket, tmpfiles.d', () => {
    const tmpfiles = read('portcullis.tmpfiles');
    const user = one(service, 'User');
    assert.match(tmpfiles, new RegExp(`^d /run/portcullis ${one(service, 'RuntimeDirectoryMode')} ${user} ${user} -$`, 'm'));
    assert.equal(one(socket, 'DirectoryMode'), one(service, 'RuntimeDirectoryMode'));
    assert.match(tmpfiles, new RegExp(`^d /var/lib/portcullis ${one(service, 'StateDirectoryMode')} ${user} ${user} -$`, 'm'));
    assert.equal(config.key_manager.local.path, '/var/lib/portcullis/keystore.db');
  });

  it('the service is Type=notify with the watchdog, and keeps the socket directory across restarts', () => {
    assert.equal(one(service, 'Type'), 'notify');
    assert.equal(one(service, 'NotifyAccess'), 'main');
    assert.equal(one(service, 'WatchdogSec'), '30s');
    assert.equal(one(service, 'RuntimeDirectoryPreserve'), 'yes');
    assert.equal(one(socket, 'Service'), 'portcullis.service');
  });

  it('the service sets nothing that breaks node, device lookup or peer lookup, nor anything that opens /etc/portcullis for writing', () => {
    const absent: Record<string, string> = {
      MemoryDenyWriteExecute: "V8's JIT writes, then executes, code",
      ProtectProc: "roles read peers' /proc/PID/status",
      ProcSubset: 'the daemon reads /proc/sys/kernel/random/boot_id',
      PrivateDevices: "the daemon stats the host's device paths for their major:minor",
      PrivateNetwork: 'key managers are remote',
      DynamicUser: "the keystore and records must keep one owner across restarts",
      ConfigurationDirectory: 'it binds /etc/portcullis writable, KEK included, despite ProtectSystem=strict',
    };
    for (const [key, why] of Object.entries(absent)) assert.equal(service.get(key), undefined, `${key}=: ${why}`);
  });

  it('the helper sets nothing that breaks device-mapper: its devices, its udev semaphores, its netlink', () => {
    const absent: Record<string, string> = {
      PrivateDevices: 'the helper opens block devices',
      PrivateIPC: "libdevmapper's udev semaphores are shared with systemd-udevd",
      PrivateNetwork: "libdevmapper's uevents are the host namespace's",
      User: 'device-mapper needs root',
    };
    for (const [key, why] of Object.entries(absent)) assert.equal(helper.get(key), undefined, `${key}=: ${why}`);
  });
});

describe('the default config', () => {
  it('passes portcullisd --check-config and names the socket, its mode and group', () => {
    const result = spawnSync(process.execPath, [join(repoRoot, 'dist', 'src', 'daemon', 'portcullisd.js'), '--check-config', '--config', join(repoRoot, 'systemd', 'portcullis.yaml')], {
      encoding: 'utf8',
      env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin' },
    });
    assert.equal(result.stderr, '');
    assert.equal(result.status, 0);
    assert.match(result.stdout, /^config OK: .*systemd\/portcullis\.yaml\n  backend local, socket \/run\/portcullis\/portcullis\.sock \(mode 0660, group portcullis\)\n/);
  });
});
