import assert from 'node:assert/strict';
import { chmod, mkdtemp, open, rm } from 'node:fs/promises';
import { createServer, connect, Socket, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { spawn } from 'node:child_process';
import { peerCredentials, peerGroups, socketFd, type PeerCredentials } from '../../native/index.js';
import { NOBODY, report, runChild } from './helpers.js';

/** A unix-socket server in its own directory that reports the credentials of each connection it accepts. */
interface CredentialServer {
  path: string;
  server: Server;
  /** Resolves with the credentials read from the next accepted connection. */
  nextPeer(): Promise<PeerCredentials>;
}

async function credentialServer(dir: string): Promise<CredentialServer> {
  const path = join(dir, 'peer.sock');
  const waiting: Array<(peer: PeerCredentials) => void> = [];
  const server = createServer((socket) => {
    const peer = peerCredentials(socketFd(socket));
    // Clients here may hang up before reading the answer; a reset is no failure of the server.
    socket.on('error', () => undefined);
    socket.end('ok');
    waiting.shift()?.(peer);
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  return { path, server, nextPeer: () => new Promise((resolve) => waiting.push(resolve)) };
}

describe('peerCredentials()', () => {
  let dir: string;
  let peers: CredentialServer;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'portcullis-peer-'));
    peers = await credentialServer(dir);
  });
  after(async () => {
    await new Promise((resolve) => peers.server.close(resolve));
    await rm(dir, { recursive: true, force: true });
  });

  it('peerCredentials() identifies this process (pid, uid, gid) at both ends of a unix socket connection', async () => {
    const accepted = peers.nextPeer();
    const client = connect(peers.path);
    await new Promise((resolve) => client.once('connect', resolve));
    const self = { pid: process.pid, uid: process.getuid?.(), gid: process.getgid?.() };
    assert.deepEqual(peerCredentials(socketFd(client)), self, 'the client sees the server');
    assert.deepEqual(await accepted, self, 'the server sees the client');
    client.destroy();
  });

  it('peerCredentials() identifies a child running as another uid', async () => {
    // mkdtemp makes the directory 0700; nobody needs to traverse it and write to the socket.
    await chmod(dir, 0o711);
    await chmod(peers.path, 0o666);
    const accepted = peers.nextPeer();
    const child = report(await runChild('connect', [peers.path], { asNobody: true }));
    assert.deepEqual(child, { pid: child.pid, uid: NOBODY, gid: NOBODY }, 'the child runs as nobody');
    assert.deepEqual(await accepted, child);
  });

  it("peerGroups() names the connecting process's supplementary groups, as the kernel recorded them at connect()", async () => {
    await chmod(dir, 0o711);
    const path = join(dir, 'groups.sock');
    let seen: (groups: number[]) => void = () => undefined;
    const groups = new Promise<number[]>((resolve) => (seen = resolve));
    const server = createServer((socket) => {
      seen(peerGroups(socketFd(socket)));
      socket.on('error', () => undefined);
      socket.end('ok');
    });
    await new Promise<void>((resolve) => server.listen(path, resolve));
    await chmod(path, 0o666);
    try {
      // setpriv(1) gives the client groups that spawn() cannot: what `usermod -aG portcullis nova` gives nova.
      const client = spawn('/usr/bin/setpriv', ['--reuid', String(NOBODY), '--regid', String(NOBODY), '--groups', '4242,4343', process.execPath, '-e',
        `require('node:net').connect(${JSON.stringify(path)}).on('data', () => process.exit(0))`], { stdio: 'ignore' });
      const exited = new Promise((resolve) => client.on('close', resolve));
      assert.deepEqual([...(await groups)].sort(), [4242, 4343]);
      await exited;
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('peerCredentials() throws a TypeError for an fd that is not a number', () => {
    for (const fd of ['3', null, undefined, 3n, {}]) {
      assert.throws(() => peerCredentials(fd as unknown as number), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: /fd to be a number/ });
    }
  });

  it('peerCredentials() throws a RangeError for a negative, fractional or too large fd', () => {
    for (const fd of [-1, 2.5, 2 ** 31, Number.NaN]) {
      assert.throws(() => peerCredentials(fd), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE', message: /fd to be an integer from 0 to 2147483647/ });
    }
  });

  it('peerCredentials() throws E_NATIVE_CALL_FAILED (ENOTSOCK) for a file that is not a socket', async () => {
    const file = await open(join(dir, 'plain-file'), 'w');
    try {
      assert.throws(() => peerCredentials(file.fd), (err: unknown) => {
        assert.ok(err instanceof Error);
        assert.equal(err.name, 'NativeError');
        assert.deepEqual([Reflect.get(err, 'code'), Reflect.get(err, 'details')], ['E_NATIVE_CALL_FAILED', { syscall: 'getsockopt', errno: 'ENOTSOCK' }]);
        assert.match(err.message, /getsockopt\(\) failed: .*ENOTSOCK/);
        return true;
      });
    } finally {
      await file.close();
    }
  });
});

describe('socketFd()', () => {
  it('socketFd() returns the descriptor of a connected socket, one that peerCredentials() accepts', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'portcullis-fd-'));
    const peers = await credentialServer(dir);
    try {
      const accepted = peers.nextPeer();
      const client = connect(peers.path);
      await new Promise((resolve) => client.once('connect', resolve));
      const fd = socketFd(client);
      assert.ok(Number.isInteger(fd) && fd > 2, `fd ${fd} is a descriptor of its own`);
      assert.equal(peerCredentials(fd).pid, process.pid);
      await accepted;
      client.destroy();
      assert.throws(() => socketFd(client), { name: 'NativeError', code: 'E_NATIVE_NO_FD' }, 'a destroyed socket has no fd');
    } finally {
      await new Promise((resolve) => peers.server.close(resolve));
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('socketFd() throws E_NATIVE_NO_FD for a socket that never connected', () => {
    assert.throws(() => socketFd(new Socket()), { name: 'NativeError', code: 'E_NATIVE_NO_FD', message: /has no file descriptor/ });
  });
});
