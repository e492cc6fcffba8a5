/**
 * portcullis-helper --listen under socket activation (systemd-socket-activate,
 * as portcullis-helper.socket does): root and the --allow-user user are served,
 * any other uid is closed at once (SO_PEERCRED). Peers of other uids are real
 * processes started with setpriv.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Op, encodeRequest } from './codec.js';
import { helperBinary, SANITIZER_REPORT } from './process.js';

// A peer: sends HELLO, prints the status of the answer, or "closed" when the helper hangs up without one.
const CLIENT = `import { connect } from 'node:net';
const s = connect(process.argv[2]);
let got = Buffer.alloc(0);
s.on('connect', () => s.write(Buffer.from(process.argv[3], 'hex')));
s.on('data', (d) => { got = Buffer.concat([got, d]); if (got.length >= 16 && got.length >= 4 + got.readUInt32LE(0)) { console.log('status ' + got.readInt32LE(12)); s.destroy(); } });
s.on('close', () => { if (got.length === 0) console.log('closed'); });
s.on('error', (e) => console.log('error ' + e.code));
`;

let dir: string;
let socket: string;
let client: string;
let stderr = '';
let activator: ReturnType<typeof spawn>;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'portcullis-listen-'));
  chmodSync(dir, 0o755);
  socket = join(dir, 'helper.sock');
  client = join(dir, 'client.mjs');
  writeFileSync(client, CLIENT, { mode: 0o644 });
  activator = spawn('systemd-socket-activate', ['-l', socket, helperBinary('plain'), '--listen', '--allow-user', 'nobody'], { stdio: ['ignore', 'ignore', 'pipe'] });
  activator.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  for (let i = 0; i < 100 && !existsSync(socket); i++) await sleep(50);
  assert.ok(existsSync(socket), `no socket at ${socket}: ${stderr}`);
  chmodSync(socket, 0o666); // the filesystem lets every uid connect: SO_PEERCRED alone decides
});
after(() => {
  activator?.kill('SIGTERM');
  rmSync(dir, { recursive: true, force: true });
});

function hello(uid: number | undefined): string {
  const pre = uid === undefined ? [] : ['setpriv', '--reuid', String(uid), '--regid', String(uid), '--clear-groups'];
  const argv = [...pre, process.execPath, client, socket, encodeRequest(Op.HELLO, 7).toString('hex')];
  const r = spawnSync(argv[0] as string, argv.slice(1), { encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.trim();
}

describe('portcullis-helper --listen', () => {
  it('serves root', () => {
    assert.equal(hello(undefined), 'status 0');
  });

  it('serves the --allow-user user (nobody, uid 65534), as the unit names portcullis', () => {
    assert.equal(hello(65534), 'status 0');
  });

  it('closes the connection of any other uid without an answer, and goes on serving', async () => {
    // Closed with the request unread: the peer may see a reset before the close.
    assert.match(hello(65533), /^(error (ECONNRESET|EPIPE)\n)?closed$/);
    // The helper's log reaches this process asynchronously: wait for the line, bounded.
    for (let i = 0; i < 200 && !stderr.includes('"event":"peer_refused"'); i++) await sleep(50);
    assert.match(stderr, /"event":"peer_refused"/);
    assert.equal(hello(undefined), 'status 0');
    assert.doesNotMatch(stderr, SANITIZER_REPORT);
  });

  it('refuses to start on a user that does not exist, or on two allowed peers', () => {
    for (const args of [['--allow-user', 'no-such-user-here'], ['--allow-uid', '65534', '--allow-user', 'nobody'], ['--allow-uid', 'nobody']]) {
      const r = spawnSync(helperBinary('plain'), ['--listen', ...args], { encoding: 'utf8', timeout: 10_000 });
      assert.equal(r.status, 64, `${args.join(' ')}: ${r.stderr}`);
    }
    assert.match(spawnSync(helperBinary('plain'), ['--listen', '--allow-user', 'no-such-user-here'], { encoding: 'utf8' }).stderr, /no such user/);
  });
});
