import { connect, createServer, type Socket } from 'node:net';
import { ChannelClient, serveChannel } from './channel.js';
import { VmError } from './errors.js';
import type { CommandRunner } from './runner.js';

/**
 * Shares one runner (the suite's one VM) with many test processes: node
 * --test runs each file in its own process, and qemu's channel has one peer,
 * so the suite script serves the VM on a unix socket and every test file
 * connects to it. Same frames as the virtio-serial channel.
 */
export interface Broker {
  readonly socketPath: string;
  /** Stops accepting and drops connected clients. Safe to call twice. */
  close(): Promise<void>;
}

export async function serveRunner(runner: CommandRunner, socketPath: string): Promise<Broker> {
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    void serveChannel(runner, socket, socket).then(() => socket.end());
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, resolve);
  });
  let closing: Promise<void> | undefined;
  return {
    socketPath,
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      });
      return closing;
    },
  };
}

/**
 * Connects to a broker and waits for its hello.
 * @throws VmError E_VM_CHANNEL when nothing answers within `timeoutMs`
 */
export function connectRunner(socketPath: string, timeoutMs = 10_000): Promise<ChannelClient> {
  const socket = connect(socketPath);
  socket.on('error', () => {}); // Reported through ChannelClient.open's rejection.
  const timer = setTimeout(() => socket.destroy(), timeoutMs);
  return ChannelClient.open(socket, socket, `the VM broker at ${socketPath}`).then(
    (client) => {
      clearTimeout(timer);
      return client;
    },
    (err: unknown) => {
      clearTimeout(timer);
      throw err instanceof VmError ? err : new VmError('E_VM_CHANNEL', `Cannot reach the VM broker at ${socketPath}`, { cause: err });
    },
  );
}
