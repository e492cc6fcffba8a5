import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, it } from 'node:test';
import { notify } from '../../native/index.js';

/*
 * Node cannot bind a unix datagram socket, so the receiver (systemd's side)
 * is Debian's python: it binds, says "bound", and prints the hex of the one
 * datagram it receives.
 */
const receiverScript = `
import socket, sys
address = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind('\\0' + address[1:] if address.startswith('@') else address)
print('bound', flush=True)
print(s.recv(65536).hex(), flush=True)
`;

/** Starts a receiver on `address`, runs `send` once it is bound, and resolves with the datagram it got. */
async function receiveOne(address: string, send: () => void): Promise<string> {
  const receiver = spawn('/usr/bin/python3', ['-c', receiverScript, address], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise((resolve) => receiver.on('close', resolve));
  const lines = createInterface({ input: receiver.stdout })[Symbol.asyncIterator]();
  try {
    assert.equal((await lines.next()).value, 'bound');
    send();
    const datagram = await lines.next();
    assert.equal(typeof datagram.value, 'string', 'the receiver printed a datagram');
    return Buffer.from(String(datagram.value), 'hex').toString('utf8');
  } finally {
    receiver.kill();
    await exited;
  }
}

/** Runs `fn` with NOTIFY_SOCKET set to `address` (or unset), restoring the runner's own afterwards. */
function withNotifySocket<T>(address: string | undefined, fn: () => T): T {
  const saved = process.env.NOTIFY_SOCKET;
  if (address === undefined) delete process.env.NOTIFY_SOCKET;
  else process.env.NOTIFY_SOCKET = address;
  try {
    return fn();
  } finally {
    if (saved === undefined) delete process.env.NOTIFY_SOCKET;
    else process.env.NOTIFY_SOCKET = saved;
  }
}

describe('notify()', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'portcullis-notify-'));
  });
  after(async () => rm(dir, { recursive: true, force: true }));

  it('notify() returns false and sends nothing when NOTIFY_SOCKET is unset or empty', () => {
    assert.equal(withNotifySocket(undefined, () => notify('READY=1')), false);
    assert.equal(withNotifySocket('', () => notify('READY=1')), false);
  });

  it('notify() sends "READY=1" as one datagram to a NOTIFY_SOCKET path and returns true', async () => {
    const path = join(dir, 'notify.sock');
    let sent: boolean | undefined;
    const got = await receiveOne(path, () => (sent = withNotifySocket(path, () => notify('READY=1'))));
    assert.equal(got, 'READY=1');
    assert.equal(sent, true);
  });

  it('notify() reaches an abstract socket named with a leading "@"', async () => {
    const name = `@portcullis-test-${randomBytes(6).toString('hex')}`;
    const got = await receiveOne(name, () => withNotifySocket(name, () => notify('STOPPING=1')));
    assert.equal(got, 'STOPPING=1');
  });

  it('notify() sends several newline-separated assignments in one datagram, unchanged', async () => {
    const path = join(dir, 'multi.sock');
    const state = 'READY=1\nSTATUS=3 volumes open, backend barbican ok — clé';
    assert.equal(await receiveOne(path, () => withNotifySocket(path, () => notify(state))), state);
  });

  it('notify() throws E_NATIVE_NOTIFY_SOCKET for a relative or too long NOTIFY_SOCKET', () => {
    for (const address of ['relative.sock', `/${'x'.repeat(107)}`, `/${'y'.repeat(300)}`, '@']) {
      assert.throws(
        () => withNotifySocket(address, () => notify('READY=1')),
        { name: 'NativeError', code: 'E_NATIVE_NOTIFY_SOCKET', message: new RegExp(`^NOTIFY_SOCKET "${address.slice(0, 20)}`) },
        address,
      );
    }
  });

  it('notify() throws E_NATIVE_CALL_FAILED naming sendto and the errno when nobody listens', () => {
    const path = join(dir, 'nobody-here.sock');
    assert.throws(() => withNotifySocket(path, () => notify('READY=1')), {
      name: 'NativeError',
      code: 'E_NATIVE_CALL_FAILED',
      details: { syscall: 'sendto', errno: 'ENOENT' },
    });
  });

  it('notify() throws a TypeError for a state that is not a string', () => {
    for (const state of [1, null, undefined, Buffer.from('READY=1')]) {
      assert.throws(() => withNotifySocket('/run/unused.sock', () => notify(state as unknown as string)), {
        name: 'TypeError',
        code: 'ERR_INVALID_ARG_TYPE',
        message: /state to be a string/,
      });
    }
  });

  it('notify() throws a RangeError for an empty state, one with a NUL, or one over 4096 bytes', () => {
    for (const state of ['', 'READY=1\0', 'STATUS='.padEnd(4097, 'x')]) {
      assert.throws(() => withNotifySocket('/run/unused.sock', () => notify(state)), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE' });
    }
  });
});
