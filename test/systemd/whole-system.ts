/**
 * The whole-system tests' guest (whole-system*.vm.test.ts): Debian's kernel
 * with the host's systemd as PID 1 and udev (test/vm/systemd-vm.ts), the
 * package `make deb` builds installed into it with dpkg, the KEK, the agent's
 * user and role, and keys made as docs/install.md says an operator would.
 * Everything runs in the guest through the harness agent, as root unless it
 * says `agent`.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { startSystemdVm, type RunResult, type Vm } from '../vm/index.js';
import { waitForMatch } from '../helpers/wait.js';
import { repoRoot } from './helpers.js';

/** The hypervisor agent's stand-in: a plain user in group portcullis. */
export const AGENT_USER = 'pcagent';
export const PROJECT = 'project-wholesys';
/** Loop backing files: on the guest's persistent disk (its overlay's upper layer). */
export const BACKING_DIR = '/var/lib/wholesys-test';

/** Figures the tests print for the record (boot times, exposure). */
export function note(text: string): void {
  process.stderr.write(`# whole-system: ${text}\n`);
}

/**
 * The package of this build, as `make deb` makes it (scripts/make-deb after
 * `make build`), into the checkout's .cache: the guest reads it there
 * through its 9p root (not /tmp, which systemd-tmpfiles may empty at boot).
 * Made once per build: the three whole-system files install the same bytes,
 * keyed by what goes into the package (every file's path, size and mtime).
 */
export function buildDeb(): { deb: string; remove: () => void } {
  const inputs = ['dist/src', 'native/build/Release', 'helper/build/portcullis-helper', 'packaging', 'systemd', 'scripts/make-deb', 'package.json', 'python'];
  const hash = createHash('sha256');
  const walk = (path: string): void => {
    const st = statSync(path, { throwIfNoEntry: false });
    if (st === undefined) return;
    if (st.isDirectory()) for (const entry of readdirSync(path).sort()) walk(join(path, entry));
    else hash.update(`${path}\0${st.size}\0${st.mtimeMs}\n`);
  };
  for (const input of inputs) walk(join(repoRoot, input));
  const key = hash.digest('hex').slice(0, 16);
  const dir = join(repoRoot, '.cache', 'vm', `deb-${key}`);
  const made = existsSync(dir) ? readdirSync(dir).find((f) => /^portcullis_.+\.deb$/.test(f)) : undefined;
  if (made !== undefined) return { deb: join(dir, made), remove: () => undefined };
  // Packages of earlier builds go: one is enough.
  mkdirSync(join(repoRoot, '.cache', 'vm'), { recursive: true });
  for (const old of readdirSync(join(repoRoot, '.cache', 'vm'), { withFileTypes: true })) {
    if (old.isDirectory() && old.name.startsWith('deb-')) rmSync(join(repoRoot, '.cache', 'vm', old.name), { recursive: true, force: true });
  }
  mkdirSync(dir, { recursive: true });
  const out = execFileSync(join(repoRoot, 'scripts', 'make-deb'), [dir], { encoding: 'utf8', timeout: 300_000 });
  const deb = out.trim().split('\n').pop() ?? '';
  assert.match(deb, /portcullis_.+\.deb$/);
  return { deb, remove: () => undefined };
}

export class Guest {
  private constructor(readonly vm: Vm) {}

  /** Boots the disk and waits, bounded, for systemd to finish starting the system. */
  static async boot(disk: string): Promise<Guest> {
    const started = Date.now();
    const vm = await startSystemdVm({ disk });
    const guest = new Guest(vm);
    const state = await guest.run('systemctl is-system-running --wait', 240_000);
    const failed = await guest.run('systemctl --failed --no-legend --plain');
    assert.equal(state.stdout.toString().trim(), 'running', `the guest's systemd is not "running": ${failed.stdout.toString()}`);
    const analyze = await guest.sh('systemd-analyze time | head -1');
    note(`boot: agent answered after ${vm.bootMs} ms, system running after ${Date.now() - started} ms; ${analyze}`);
    return guest;
  }

  run(script: string, timeoutMs = 120_000, stdin?: Buffer): Promise<RunResult> {
    return this.vm.run(['sh', '-c', script], { timeoutMs, ...(stdin === undefined ? {} : { stdin }) });
  }

  /** Runs a shell script as root; fails the test unless it exits 0. Returns stdout, trimmed. */
  async sh(script: string, timeoutMs = 120_000, stdin?: Buffer): Promise<string> {
    const r = await this.run(script, timeoutMs, stdin);
    assert.equal(r.code, 0, `in the guest: ${script}\nexit ${r.code} ${r.signal ?? ''}\n${r.stdout.toString()}${r.stderr.toString()}`);
    return r.stdout.toString().trim();
  }

  /** The installed CLI as the agent's user (its groups from /etc/group: portcullis). */
  agent(args: readonly string[], timeoutMs = 300_000): Promise<RunResult> {
    return this.vm.run(['setpriv', `--reuid=${AGENT_USER}`, `--regid=${AGENT_USER}`, '--init-groups', '--', '/usr/bin/portcullis', ...args], { timeoutMs });
  }

  /** The CLI as the agent with --json; fails the test unless it exits 0. */
  async agentJson<T>(args: readonly string[]): Promise<T> {
    const r = await this.agent([...args, '--json']);
    assert.equal(r.code, 0, `portcullis ${args.join(' ')} as ${AGENT_USER}: exit ${r.code}\n${r.stdout.toString()}${r.stderr.toString()}`);
    return JSON.parse(r.stdout.toString()) as T;
  }

  /** `systemctl show UNIT` as a map of the asked properties. */
  async show(unit: string, props: readonly string[]): Promise<Record<string, string>> {
    const out = await this.sh(`systemctl show ${unit} ${props.map((p) => `-p ${p}`).join(' ')}`);
    const shown: Record<string, string> = {};
    for (const line of out.split('\n')) {
      const [name, value] = [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)];
      // A list property (DeviceAllow=) comes one line per entry.
      shown[name] = shown[name] === undefined ? value : `${shown[name]}\n${value}`;
    }
    return shown;
  }

  /** The daemon's (or the helper's) pid; fails the test when the service has none (a kill of "0" would hit the test's own shell). */
  async mainPid(unit = 'portcullis.service'): Promise<string> {
    const pid = (await this.show(unit, ['MainPID'])).MainPID ?? '0';
    assert.match(pid, /^[1-9]\d*$/, `${unit} has a main process`);
    return pid;
  }

  /** Waits, bounded, until `systemctl show` has `prop` matching. */
  async waitFor(unit: string, prop: string, pattern: RegExp, timeoutMs = 60_000): Promise<string> {
    const m = await waitForMatch(`${unit} ${prop}`, async () => (await this.show(unit, [prop]))[prop] ?? '', pattern, { timeoutMs, intervalMs: 500 });
    return m[0];
  }

  /** The daemon's journal since this boot, as journalctl -o json entries. */
  async journal(): Promise<Array<Record<string, unknown>>> {
    const out = await this.sh('journalctl -b -u portcullis.service -o json --no-pager');
    return out.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>);
  }

  /** A zeroed backing file of `mib` MiB on a new loop device; returns the device. */
  loop(file: string, mib = 32): Promise<string> {
    return this.sh(`mkdir -p ${BACKING_DIR} && f=${BACKING_DIR}/${file} && { [ -e $f ] || truncate -s ${mib}M $f; } && losetup --find --show $f`);
  }
}

/**
 * docs/install.md on the guest: the package, the KEK, the agent's user in
 * group portcullis and named in roles.agent. Enables nothing.
 */
export async function installPortcullis(g: Guest, deb: string): Promise<void> {
  const t = Date.now();
  // man-db's trigger re-indexes every manual page of the host's root over 9p: most of an install's time under TCG.
  await g.sh('rm -f /var/lib/man-db/auto-update');
  // No network in the guest: every dependency is already installed (nodejs as a real dpkg package).
  await g.sh(`cd ${dirname(deb)} && apt-get install -y -q ./${basename(deb)}`, 600_000);
  note(`apt-get install of the .deb: ${Date.now() - t} ms`);
  await g.sh('install -d -m 0755 /etc/portcullis && (umask 077; head -c 32 /dev/urandom > /etc/portcullis/kek)');
  await g.sh(`useradd -M -s /usr/sbin/nologin -G portcullis ${AGENT_USER}`);
  const gid = await g.sh('getent group portcullis | cut -d: -f3');
  await g.sh(`sed -i 's/^  agent: { uids: \\[\\], gids: \\[\\] }$/  agent: { uids: [], gids: [${gid}] }/' /etc/portcullis/portcullis.yaml && grep -q 'gids: \\[${gid}\\]' /etc/portcullis/portcullis.yaml`);
  await g.sh('portcullisd --check-config --config /etc/portcullis/portcullis.yaml');
}

/**
 * 512-bit keys in the local keystore, one per name, made with the CLI as the
 * keystore's owner (the user portcullis) under the unit's own credential (the
 * config reads the KEK from $CREDENTIALS_DIRECTORY), in one systemd-run.
 * Returns their ids.
 */
export async function createKeys(g: Guest, names: readonly string[]): Promise<string[]> {
  const out = await g.sh(
    `systemd-run --quiet --wait --pipe -p User=portcullis -p Group=portcullis -p LoadCredential=kek:/etc/portcullis/kek -p StateDirectory=portcullis -p StateDirectoryMode=0700 ` +
      `/bin/sh -c 'for n; do /usr/bin/portcullis key create --project ${PROJECT} --length 512 --name "$n" || exit 1; done' sh ${names.join(' ')}`,
  );
  // Without --json, `key create` prints the id alone on its line.
  const ids = out.split('\n');
  assert.equal(ids.length, names.length, out);
  for (const id of ids) assert.match(id, /^[0-9a-f-]{36}$/, out);
  return ids;
}
