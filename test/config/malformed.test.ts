/**
 * Malformed configs, table-driven: every one is refused at start, and the
 * refusal names the file and the bad key (or the YAML line). Most rows go
 * through the loader in-process; one row of each kind also starts the real
 * daemon binary, which must exit 3 without creating its socket.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, it } from 'node:test';
import { stringify } from 'yaml';
import { ConfigError } from '../../src/config/errors.js';
import { loadConfigFile } from '../../src/config/load.js';

const daemonMain = fileURLToPath(new URL('../fixtures/daemon-main.js', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'portcullis-malformed-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const socketPath = join(dir, 'portcullis.sock');

/** A config that starts: the local keystore and the socket under this test's directory. */
const base = (): Record<string, Record<string, unknown>> => ({
  key_manager: { backend: 'local', local: { path: join(dir, 'keystore.db'), kek_file: join(dir, 'kek') } },
  socket: { path: socketPath },
  log: { format: 'json' },
});

/** `set('limits.max_body_bytes', 1)`: the base config with one value replaced (or, with `undefined`, removed). */
function set(path: string, value: unknown): string {
  const config: Record<string, unknown> = base();
  const keys = path.split('.');
  let at = config;
  for (const key of keys.slice(0, -1)) {
    const next = at[key];
    at[key] = typeof next === 'object' && next !== null && !Array.isArray(next) ? { ...next } : {};
    at = at[key] as Record<string, unknown>;
  }
  const last = keys[keys.length - 1] ?? '';
  if (value === undefined) delete at[last];
  else at[last] = value;
  return stringify(config);
}

interface Row {
  name: string;
  kind: 'unknown key' | 'wrong type' | 'out of range' | 'bad path or value' | 'missing backend section' | 'bad YAML';
  text: string | Buffer;
  code: 'E_CONFIG_INVALID' | 'E_CONFIG_SYNTAX';
  /** What the refusal must name: the key path (E_CONFIG_INVALID) or the YAML problem. */
  names: RegExp;
  /** A nova.conf-style file (read as INI) instead of YAML. */
  ini?: true;
}

const yaml = (s: string): string => `${stringify(base())}${s}`;
const bomb = ['a: &a [x, x, x, x, x, x, x, x, x, x]', ...'bcdefgh'.split('').map((k, i) => `${k}: &${k} [${Array(10).fill(`*${'abcdefg'[i]}`).join(', ')}]`)].join('\n');

const rows: Row[] = [
  { name: 'unknown top-level key', kind: 'unknown key', text: yaml('colour: blue\n'), code: 'E_CONFIG_INVALID', names: /colour: unknown key/ },
  { name: 'unknown socket key', kind: 'unknown key', text: set('socket.colour', 'blue'), code: 'E_CONFIG_INVALID', names: /socket\.colour: unknown key/ },
  { name: 'misspelt limit', kind: 'unknown key', text: set('limits.max_conections', 10), code: 'E_CONFIG_INVALID', names: /limits\.max_conections: unknown key/ },
  { name: 'misspelt keystore key', kind: 'unknown key', text: set('key_manager.local.kek', '/etc/kek'), code: 'E_CONFIG_INVALID', names: /key_manager\.local\.kek: unknown key/ },
  { name: 'misspelt roles section', kind: 'unknown key', text: set('roles.agents', { uids: [1] }), code: 'E_CONFIG_INVALID', names: /roles\.agents: unknown key/ },
  { name: 'misspelt log level key', kind: 'unknown key', text: set('log.levle', 'debug'), code: 'E_CONFIG_INVALID', names: /log\.levle: unknown key/ },
  { name: 'socket mode as a boolean', kind: 'wrong type', text: set('socket.mode', true), code: 'E_CONFIG_INVALID', names: /socket\.mode/ },
  { name: 'body limit as a string', kind: 'wrong type', text: set('limits.max_body_bytes', '64k'), code: 'E_CONFIG_INVALID', names: /limits\.max_body_bytes/ },
  { name: 'uids as a number', kind: 'wrong type', text: set('roles.agent.uids', 1000), code: 'E_CONFIG_INVALID', names: /roles\.agent\.uids/ },
  { name: 'uids as names', kind: 'wrong type', text: set('roles.agent.uids', ['nova']), code: 'E_CONFIG_INVALID', names: /roles\.agent\.uids\.0/ },
  { name: 'cache ttl as "1h"', kind: 'wrong type', text: set('cache.ttl_seconds', '1h'), code: 'E_CONFIG_INVALID', names: /cache\.ttl_seconds/ },
  { name: 'upgrade_keyslots as "yes"', kind: 'wrong type', text: set('luks.upgrade_keyslots', 'yes'), code: 'E_CONFIG_INVALID', names: /luks\.upgrade_keyslots/ },
  { name: 'key_manager as a list', kind: 'wrong type', text: set('key_manager', ['local']), code: 'E_CONFIG_INVALID', names: /key_manager: / },
  { name: 'header timeout null', kind: 'wrong type', text: set('limits.header_timeout_seconds', null), code: 'E_CONFIG_INVALID', names: /limits\.header_timeout_seconds/ },
  { name: 'the whole file a scalar', kind: 'wrong type', text: 'hello\n', code: 'E_CONFIG_INVALID', names: /\(top level\): .*expected object/ },
  { name: 'body limit below 1 KiB', kind: 'out of range', text: set('limits.max_body_bytes', 100), code: 'E_CONFIG_INVALID', names: /limits\.max_body_bytes/ },
  { name: 'body limit above 1 MiB', kind: 'out of range', text: set('limits.max_body_bytes', 10_000_000), code: 'E_CONFIG_INVALID', names: /limits\.max_body_bytes/ },
  { name: 'no connections', kind: 'out of range', text: set('limits.max_connections', 0), code: 'E_CONFIG_INVALID', names: /limits\.max_connections/ },
  { name: 'no pending requests', kind: 'out of range', text: set('limits.max_pending_requests', 0), code: 'E_CONFIG_INVALID', names: /limits\.max_pending_requests/ },
  { name: 'request timeout past a Node timer (would fire at once)', kind: 'out of range', text: set('limits.request_timeout_seconds', 3_000_000), code: 'E_CONFIG_INVALID', names: /limits\.request_timeout_seconds: must be at most/ },
  { name: 'command timeout past a Node timer', kind: 'out of range', text: set('limits.command_timeout_seconds', 1e9), code: 'E_CONFIG_INVALID', names: /limits\.command_timeout_seconds/ },
  { name: 'negative shutdown grace', kind: 'out of range', text: set('limits.shutdown_grace_seconds', -1), code: 'E_CONFIG_INVALID', names: /limits\.shutdown_grace_seconds/ },
  { name: 'header timeout under a second', kind: 'out of range', text: set('limits.header_timeout_seconds', 0.5), code: 'E_CONFIG_INVALID', names: /limits\.header_timeout_seconds/ },
  { name: 'body timeout of two hours', kind: 'out of range', text: set('limits.body_timeout_seconds', 7200), code: 'E_CONFIG_INVALID', names: /limits\.body_timeout_seconds/ },
  { name: 'mode with a 9', kind: 'out of range', text: set('socket.mode', '0999'), code: 'E_CONFIG_INVALID', names: /socket\.mode/ },
  { name: 'mode above 0777', kind: 'out of range', text: set('socket.mode', 1024), code: 'E_CONFIG_INVALID', names: /socket\.mode/ },
  { name: 'key size not a multiple of 8', kind: 'out of range', text: set('luks.key_size', 300), code: 'E_CONFIG_INVALID', names: /luks\.key_size/ },
  { name: 'zero PBKDF iterations', kind: 'out of range', text: set('luks.pbkdf_iterations', 0), code: 'E_CONFIG_INVALID', names: /luks\.pbkdf_iterations/ },
  { name: 'empty cache', kind: 'out of range', text: set('cache.max_entries', 0), code: 'E_CONFIG_INVALID', names: /cache\.max_entries/ },
  { name: 'negative gid', kind: 'out of range', text: set('roles.admin.gids', [-1]), code: 'E_CONFIG_INVALID', names: /roles\.admin\.gids\.0/ },
  { name: 'relative socket path', kind: 'bad path or value', text: set('socket.path', 'portcullis.sock'), code: 'E_CONFIG_INVALID', names: /socket\.path: must be an absolute path/ },
  { name: 'socket path longer than sockaddr_un', kind: 'bad path or value', text: set('socket.path', `/run/${'x'.repeat(200)}.sock`), code: 'E_CONFIG_INVALID', names: /socket\.path: must fit in sockaddr_un/ },
  { name: 'NUL in the socket path', kind: 'bad path or value', text: set('socket.path', '/run/a\0b.sock'), code: 'E_CONFIG_INVALID', names: /socket\.path: must not contain a NUL/ },
  { name: 'relative volumes file', kind: 'bad path or value', text: set('runtime.volumes_file', 'volumes.json'), code: 'E_CONFIG_INVALID', names: /runtime\.volumes_file: must be an absolute path/ },
  { name: 'relative audit file', kind: 'bad path or value', text: set('log.audit_file', 'audit.log'), code: 'E_CONFIG_INVALID', names: /log\.audit_file: must be an absolute path/ },
  { name: 'relative keystore', kind: 'bad path or value', text: set('key_manager.local.path', 'keystore.db'), code: 'E_CONFIG_INVALID', names: /key_manager\.local\.path: must be an absolute path/ },
  { name: 'NUL in the KEK file', kind: 'bad path or value', text: set('key_manager.local.kek_file', '/etc/portcullis/k\0ek'), code: 'E_CONFIG_INVALID', names: /key_manager\.local\.kek_file: must not contain a NUL/ },
  { name: 'empty KEK file', kind: 'bad path or value', text: set('key_manager.local.kek_file', ''), code: 'E_CONFIG_INVALID', names: /key_manager\.local\.kek_file/ },
  { name: 'KEK credential with a slash', kind: 'bad path or value', text: set('key_manager.local.kek_credential', '../etc/kek'), code: 'E_CONFIG_INVALID', names: /key_manager\.local\.kek_credential/ },
  { name: 'group name with a space', kind: 'bad path or value', text: set('socket.group', 'bad group'), code: 'E_CONFIG_INVALID', names: /socket\.group/ },
  { name: 'cipher with a space', kind: 'bad path or value', text: set('luks.cipher', 'aes xts-plain64'), code: 'E_CONFIG_INVALID', names: /luks\.cipher/ },
  { name: 'unknown log level', kind: 'bad path or value', text: set('log.level', 'verbose'), code: 'E_CONFIG_INVALID', names: /log\.level/ },
  { name: 'kmip without its section', kind: 'missing backend section', text: set('key_manager', { backend: 'kmip' }), code: 'E_CONFIG_INVALID', names: /key_manager\.kmip\.host/ },
  { name: 'kmip with an empty section', kind: 'missing backend section', text: set('key_manager', { backend: 'kmip', kmip: {} }), code: 'E_CONFIG_INVALID', names: /key_manager\.kmip\.host/ },
  { name: 'barbican without its section', kind: 'missing backend section', text: set('key_manager', { backend: 'barbican' }), code: 'E_CONFIG_INVALID', names: /key_manager\.barbican\.endpoint/ },
  { name: 'fixed without its section', kind: 'missing backend section', text: set('key_manager', { backend: 'fixed' }), code: 'E_CONFIG_INVALID', names: /key_manager\.fixed\.allow_insecure/ },
  { name: 'a backend that does not exist', kind: 'missing backend section', text: set('key_manager.backend', 'vault'), code: 'E_CONFIG_INVALID', names: /key_manager\.backend/ },
  { name: 'unclosed flow sequence', kind: 'bad YAML', text: yaml('roles:\n  agent:\n    uids: [1, 2\n'), code: 'E_CONFIG_SYNTAX', names: /line \d+/ },
  { name: 'tab indentation', kind: 'bad YAML', text: yaml('limits:\n\tmax_body_bytes: 2048\n'), code: 'E_CONFIG_SYNTAX', names: /[Tt]ab/ },
  { name: 'duplicate key', kind: 'bad YAML', text: yaml('limits:\n  max_body_bytes: 2048\nlimits:\n  max_body_bytes: 4096\n'), code: 'E_CONFIG_SYNTAX', names: /unique/ },
  { name: 'two documents', kind: 'bad YAML', text: yaml('---\nlog:\n  level: debug\n'), code: 'E_CONFIG_SYNTAX', names: /multiple documents/ },
  { name: 'undefined alias', kind: 'bad YAML', text: yaml('roles: *nothing\n'), code: 'E_CONFIG_SYNTAX', names: /alias/ },
  { name: 'alias bomb', kind: 'bad YAML', text: `${stringify(base())}${bomb}\n`, code: 'E_CONFIG_SYNTAX', names: /alias/ },
  { name: 'nova.conf: an option outside any section', kind: 'bad YAML', ini: true, text: 'backend = barbican\n[key_manager]\n', code: 'E_CONFIG_SYNTAX', names: /line 1 is not INI/ },
  { name: 'nova.conf: a key manager portcullis has no backend for', kind: 'missing backend section', ini: true, text: '[key_manager]\nbackend = vault\n', code: 'E_CONFIG_INVALID', names: /backend = vault is not supported/ },
  { name: 'nova.conf: retries that are no number', kind: 'wrong type', ini: true, text: '[key_manager]\nbackend = barbican\n[barbican]\nbarbican_endpoint = http://127.0.0.1:9311\nnumber_of_retries = many\n', code: 'E_CONFIG_INVALID', names: /key_manager\.barbican\.number_of_retries/ },
  { name: 'bytes that are not UTF-8', kind: 'bad YAML', text: Buffer.concat([Buffer.from(stringify(base())), Buffer.from('luks:\n  cipher: aes'), Buffer.from([0xff, 0xfe]), Buffer.from('\n')]), code: 'E_CONFIG_SYNTAX', names: /not valid UTF-8/ },
];

function write(row: Row, i: number): string {
  const file = join(dir, `case-${i}.${row.ini === true ? 'conf' : 'yaml'}`);
  writeFileSync(file, row.text);
  return file;
}

describe('malformed configs are refused at start, naming the file and the bad key', () => {
  it(`the loader refuses each of ${rows.length} malformed configs with its code, the file and the key path`, () => {
    // Every row is tried; the failure lists each row that was not refused as it should be.
    const wrong = rows.flatMap((row, i) => {
      const file = write(row, i);
      try {
        loadConfigFile(file);
        return [`${row.name}: loaded`];
      } catch (err) {
        if (!(err instanceof ConfigError)) return [`${row.name}: ${String(err)} (no config error code)`];
        if (err.code !== row.code) return [`${row.name}: ${err.code} instead of ${row.code}: ${err.message}`];
        if (!err.message.includes(file)) return [`${row.name}: the message does not name ${file}: ${err.message}`];
        if (!row.names.test(err.message)) return [`${row.name}: the message does not match ${String(row.names)}: ${err.message}`];
        return [];
      }
    });
    assert.deepEqual(wrong, []);
  });

  it('the daemon binary exits 3 for one config of each kind, creates no socket, and names the key on stderr', async () => {
    const firstOfKind = rows.map((row, i) => ({ row, i })).filter(({ row }, i) => rows.findIndex((r) => r.kind === row.kind) === i);
    // In parallel: one node process each (about 0.3 s), started at once.
    const runs = await Promise.all(
      firstOfKind.map(({ row, i }) => {
        const file = write(row, 100 + i);
        return new Promise<{ row: Row; file: string; code: number | null; stderr: string }>((resolve) => {
          // In this test's directory: a relative socket path would land on the socket path checked below.
          const child = spawn(process.execPath, [daemonMain, '--config', file], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
          let stderr = '';
          child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
          // Bounded: a daemon that accepted the config would serve forever.
          const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
          child.on('close', (code) => {
            clearTimeout(timer);
            resolve({ row, file, code, stderr });
          });
        });
      }),
    );
    assert.equal(runs.length, 6, 'one of each kind');
    for (const { row, file, code, stderr } of runs) {
      assert.equal(code, 3, `${row.name}: exited ${code === null ? 'not at all (it started)' : code}: ${stderr}`);
      assert.match(stderr, new RegExp(`portcullisd: ${row.code}: `), row.name);
      assert.ok(stderr.includes(file), `${row.name}: stderr names the file: ${stderr}`);
      assert.match(stderr, row.names, row.name);
    }
    assert.equal(existsSync(socketPath), false, 'no socket was created');
  });
});
