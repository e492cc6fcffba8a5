/**
 * `make deb`: the package scripts/make-deb builds from this build (what `make deb` runs after
 * `make build`; here into a temporary directory, as `make build` would remove dist/ under the
 * running tests), read with dpkg-deb, its dependencies resolved by apt against this host's
 * packages, then installed, reinstalled and purged by dpkg into an empty root. dpkg --root runs
 * the maintainer scripts outside that root (--force-script-chrootless) with DPKG_ROOT set, which
 * they honour: the group and directories land in the root, and systemctl is left alone.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, realpathSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isRoot, repoRoot, tempDir } from './helpers.js';

const pkg = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { version: string };
const nodeMajor = Number(process.versions.node.split('.')[0]);

/** Runs a command; throws with its output unless it exits 0. */
function run(command: string, args: string[], timeout = 120_000): string {
  const result = spawnSync(command, args, { encoding: 'utf8', timeout, maxBuffer: 64 * 1024 * 1024 });
  if (result.status !== 0) throw new Error(`${command} ${args.join(' ')} failed (${String(result.status)}):\n${result.stdout}${result.stderr}`);
  return result.stdout;
}

/** The dev-only packages of the lockfile, by their directory under node_modules (typescript, fast-check, pure-rand, ...). */
function devOnlyModules(): string[] {
  const lock = JSON.parse(readFileSync(join(repoRoot, 'package-lock.json'), 'utf8')) as { packages: Record<string, { dev?: boolean }> };
  return Object.entries(lock.packages)
    .filter(([path, meta]) => meta.dev === true && path.startsWith('node_modules/') && !path.slice('node_modules/'.length).includes('/node_modules/'))
    .map(([path]) => path.slice('node_modules/'.length));
}

/** Every regular file under `dir`. */
function walk(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(join(dir, e.name)) : e.isFile() ? [join(dir, e.name)] : []));
}

describe('make deb (scripts/make-deb) and the package it builds', { skip: isRoot ? undefined : 'dpkg --root installs and purges as root' }, () => {
  let work: string;
  let deb: string;
  let tree: string;
  let control: string;
  /** dpkg-deb --contents, as [mode, owner, path without "./"]. */
  let contents: Array<[string, string, string]>;

  before(() => {
    work = tempDir('deb');
    deb = run(join(repoRoot, 'scripts/make-deb'), [join(work, 'out')], 180_000).trim().split('\n').pop() ?? '';
    tree = join(work, 'tree');
    control = join(work, 'control');
    run('dpkg-deb', ['--extract', deb, tree]);
    run('dpkg-deb', ['--control', deb, control]);
    contents = run('dpkg-deb', ['--contents', deb])
      .trim()
      .split('\n')
      .map((line) => {
        const [mode = '', owner = '', , , , path = ''] = line.split(/\s+/);
        return [mode, owner, path.replace(/^\.\//, '')];
      });
  });
  after(() => rmSync(work, { recursive: true, force: true }));

  const arch = () => run('dpkg', ['--print-architecture']).trim();
  const field = (name: string) => run('dpkg-deb', ['--field', deb, name]).trim();

  it('is named portcullis_VERSION_ARCH.deb, with the control fields and dependencies', () => {
    assert.equal(deb, join(work, 'out', `portcullis_${pkg.version}_${arch()}.deb`));
    assert.deepEqual([field('Package'), field('Version'), field('Architecture')], ['portcullis', pkg.version, arch()]);
    const depends = field('Depends').split(/,\s*/);
    for (const d of [`nodejs (>= ${nodeMajor})`, `nodejs (<< ${nodeMajor + 1})`, 'cryptsetup-bin', 'dmsetup', 'systemd', 'python3']) assert.ok(depends.includes(d), `Depends has ${d}: ${depends.join(', ')}`);
    assert.ok(depends.some((d) => /^libc6 \(>= 2\.\d+\)$/.test(d)), `Depends has libc6 from dpkg-shlibdeps: ${depends.join(', ')}`);
    // The privileged helper's libraries, found by dpkg-shlibdeps in the binary itself.
    for (const lib of ['libcryptsetup12', 'libblkid1']) assert.ok(depends.some((d) => d.startsWith(`${lib} `) || d === lib), `Depends has ${lib}: ${depends.join(', ')}`);
    assert.match(field('Maintainer'), /^.+ <.+@.+>$/);
    assert.match(field('Description'), /^disk-encryption key daemon/);
  });

  it('declares the default config a conffile, and nothing else', () => {
    assert.equal(readFileSync(join(control, 'conffiles'), 'utf8'), '/etc/portcullis/portcullis.yaml\n');
  });

  it('holds the daemon, the CLI, units, sysusers.d and tmpfiles.d entries, man pages, addons, the config and the os-brick package', () => {
    const expected: Array<[string, string]> = [
      ['usr/bin/portcullis', '-rwxr-xr-x'],
      ['usr/sbin/portcullisd', '-rwxr-xr-x'],
      ['usr/lib/systemd/system/portcullis.service', '-rw-r--r--'],
      ['usr/lib/systemd/system/portcullis.socket', '-rw-r--r--'],
      ['usr/lib/sysusers.d/portcullis.conf', '-rw-r--r--'],
      ['usr/lib/tmpfiles.d/portcullis.conf', '-rw-r--r--'],
      ['usr/share/man/man8/portcullis.8.gz', '-rw-r--r--'],
      ['usr/share/man/man8/portcullisd.8.gz', '-rw-r--r--'],
      ['usr/share/doc/portcullis/copyright', '-rw-r--r--'],
      ['usr/share/doc/portcullis/changelog.gz', '-rw-r--r--'],
      ['etc/portcullis/portcullis.yaml', '-rw-r--r--'],
      ['usr/lib/portcullis/dist/src/daemon/portcullisd.js', '-rwxr-xr-x'],
      ['usr/lib/portcullis/dist/src/cli/main.js', '-rwxr-xr-x'],
      ['usr/lib/portcullis/native/build/Release/portcullis_native.node', '-rw-r--r--'],
      ['usr/lib/portcullis/node_modules/better-sqlite3/build/Release/better_sqlite3.node', '-rw-r--r--'],
      ...['__init__', 'client', 'encryptors', 'errors'].map((m): [string, string] => [`usr/lib/python3/dist-packages/portcullis_brick/${m}.py`, '-rw-r--r--']),
      ...['better-sqlite3', 'prom-client', 'winston', 'yaml', 'zod'].map((m): [string, string] => [`usr/lib/portcullis/node_modules/${m}/package.json`, '-rw-r--r--']),
    ];
    const modes = new Map(contents.map(([mode, , path]) => [path, mode]));
    assert.deepEqual(expected.map(([path]) => [path, modes.get(path)]), expected);
  });

  it('owns every file as root, and has no devDependency, test, source map or dotfile', () => {
    assert.deepEqual(contents.filter(([, owner]) => owner !== 'root/root'), []);
    const dev = devOnlyModules();
    assert.ok(dev.includes('typescript') && dev.includes('fast-check'), 'the lockfile marks the dev tools dev-only');
    const modules = new Set(contents.map(([, , p]) => /^usr\/lib\/portcullis\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(p)?.[1]).filter((m) => m !== undefined));
    assert.deepEqual(dev.filter((m) => modules.has(m)), []);
    const paths = contents.map(([, , p]) => p);
    assert.deepEqual(paths.filter((p) => /^usr\/lib\/portcullis\/dist\/(test|scripts|bench)\//.test(p) || (p.startsWith('usr/lib/portcullis/dist/') && p.endsWith('.map')) || /\/\.[^/]+\/?$/.test(p)), []);
  });

  it('has wrappers that exec Debian\'s /usr/bin/node on the installed entry points, and a unit that runs /usr/sbin/portcullisd', () => {
    assert.match(readFileSync(join(tree, 'usr/bin/portcullis'), 'utf8'), /^exec \/usr\/bin\/node \/usr\/lib\/portcullis\/dist\/src\/cli\/main\.js "\$@"$/m);
    assert.match(readFileSync(join(tree, 'usr/sbin/portcullisd'), 'utf8'), /^exec \/usr\/bin\/node \/usr\/lib\/portcullis\/dist\/src\/daemon\/portcullisd\.js "\$@"$/m);
    assert.match(readFileSync(join(tree, 'usr/lib/systemd/system/portcullis.service'), 'utf8'), /^ExecStart=\/usr\/sbin\/portcullisd --config \/etc\/portcullis\/portcullis\.yaml$/m);
  });

  it('embeds no path of the build: neither the checkout, its node_modules, the staging directory nor /home', () => {
    const needles = [repoRoot.replace(/\/$/, ''), realpathSync(join(repoRoot, 'node_modules')), 'portcullis-deb.', '/home/'];
    // Upstream modules' JavaScript may mention /home in prose (bindings' doc comment does); their addons may not.
    const upstreamText = (file: string) => /\/node_modules\/.*\.(c|m)?js$/.test(file);
    const hits = walk(tree).flatMap((file) => {
      const text = readFileSync(file).toString('latin1');
      return needles.filter((n) => text.includes(n) && !(n === '/home/' && upstreamText(file))).map((n) => `${file.slice(tree.length)}: ${n}`);
    });
    assert.deepEqual(hits, []);
  });

  it('has maintainer scripts that sh -n accepts and that enable no unit', () => {
    for (const script of ['postinst', 'prerm', 'postrm']) {
      const path = join(control, script);
      assert.equal(statSync(path).mode & 0o777, 0o755, script);
      run('sh', ['-n', path]);
      const code = readFileSync(path, 'utf8').replace(/^\s*#.*$/gm, '');
      assert.doesNotMatch(code, /\b(enable|start)\b.*portcullis|deb-systemd-helper enable/, `${script} enables or starts nothing`);
    }
  });

  it('runs from the extracted tree: the entry point with its native addon, and better-sqlite3 after the pruning', () => {
    const lib = join(tree, 'usr/lib/portcullis');
    assert.equal(run(process.execPath, [join(lib, 'dist/src/daemon/portcullisd.js'), '--version']), `portcullisd ${pkg.version}\n`);
    const sqlite = `const D = require(${JSON.stringify(join(lib, 'node_modules/better-sqlite3'))}); process.stdout.write(String(new D(':memory:').prepare('select 41 + 1 as x').get().x))`;
    assert.equal(run(process.execPath, ['-e', sqlite]), '42');
  });

  it('apt resolves its dependencies against this host\'s packages (apt-get install --simulate ./portcullis_*.deb)', () => {
    const out = run('apt-get', ['install', '--simulate', '--no-install-recommends', deb]);
    assert.match(out, new RegExp(`^Inst portcullis \\(${pkg.version.replaceAll('.', '\\.')} local-deb`, 'm'));
    assert.doesNotMatch(out, /^Remv /m);
  });

  describe('dpkg --root: install, reinstall, purge', () => {
    let root: string;
    const dpkg = (...args: string[]) => run('dpkg', [`--root=${root}`, '--force-script-chrootless', '--force-depends', '--force-not-root', ...args]);
    const status = () => spawnSync('dpkg-query', [`--root=${root}`, '-W', '-f=${Status}', 'portcullis'], { encoding: 'utf8' }).stdout;
    before(() => {
      root = join(work, 'root');
      mkdirSync(join(root, 'var/lib/dpkg/info'), { recursive: true });
      mkdirSync(join(root, 'var/lib/dpkg/updates'));
      writeFileSync(join(root, 'var/lib/dpkg/status'), '');
      dpkg('--install', deb);
    });

    it('postinst creates the group portcullis and /var/lib/portcullis 0700, /run/portcullis 0755, and enables nothing', () => {
      assert.equal(status(), 'install ok installed');
      assert.match(readFileSync(join(root, 'etc/group'), 'utf8'), /^portcullis:x:\d+:$/m);
      assert.deepEqual([statSync(join(root, 'var/lib/portcullis')).mode & 0o777, statSync(join(root, 'run/portcullis')).mode & 0o777], [0o700, 0o755]);
      assert.equal(existsSync(join(root, 'etc/systemd/system')), false, 'no enablement link under /etc/systemd/system');
    });

    it('keeps an edited config when the package is installed again', () => {
      const config = join(root, 'etc/portcullis/portcullis.yaml');
      writeFileSync(config, `${readFileSync(config, 'utf8')}# edited by the operator\n`);
      dpkg('--install', deb);
      assert.match(readFileSync(config, 'utf8'), /# edited by the operator\n$/);
    });

    it('purge removes the package and its config, and keeps the KEK and the keystore', () => {
      writeFileSync(join(root, 'etc/portcullis/kek'), 'k'.repeat(32), { mode: 0o600 });
      writeFileSync(join(root, 'var/lib/portcullis/keystore.db'), 'keystore');
      dpkg('--purge', 'portcullis');
      assert.equal(status(), '');
      assert.deepEqual(['usr/lib/portcullis', 'usr/sbin/portcullisd', 'etc/portcullis/portcullis.yaml'].filter((p) => existsSync(join(root, p))), []);
      assert.equal(readFileSync(join(root, 'etc/portcullis/kek'), 'utf8'), 'k'.repeat(32));
      assert.equal(readFileSync(join(root, 'var/lib/portcullis/keystore.db'), 'utf8'), 'keystore');
    });
  });
});
