/**
 * What the daemon's Barbican VM tests share: a real kernel, a real Barbican
 * behind a recording pass-through proxy (every request the daemon makes is
 * counted), a direct client for making keys, and one portcullisd using it.
 */
import { barbicanBackend } from '../../src/keyclient/backends/barbican/backend.js';
import type { KeyManager } from '../../src/keyclient/key-manager.js';
import { plainAllocator } from '../../src/util/secure-memory.js';
import { startBarbican, type BarbicanServer } from '../fixtures/barbican-server.js';
import type { DaemonProcess } from '../fixtures/daemon.js';
import { startInterposer } from '../fixtures/servers/fakes.js';
import { daemonKernel, type DaemonKernel } from './vm-setup.js';

export interface BarbicanDaemon {
  kernel: DaemonKernel;
  barbican: BarbicanServer;
  daemon: DaemonProcess;
  /** Barbican's own client, not through the daemon or the proxy. */
  direct: KeyManager;
  /** A new AES-256 key in `projectId`; its id. */
  newKey(projectId: string): Promise<string>;
  /** Payload GETs of secret `id` that reached Barbican through the proxy. */
  payloadFetches(id: string): number;
  /** Stops everything; safe after a partial start. */
  stop(): Promise<void>;
}

export async function startBarbicanDaemon(): Promise<BarbicanDaemon> {
  // Stopped in reverse order, also when a later step fails: a failed before() must not leave a VM or a server running.
  const stops: Array<() => Promise<unknown>> = [];
  const stop = async () => {
    for (const s of stops.splice(0).reverse()) await s().catch(() => undefined);
  };
  try {
    // allSettled: whichever of the two did start is stopped even when the other failed.
    const [k, b] = await Promise.allSettled([daemonKernel(), startBarbican({ pipeline: 'noauth' })]);
    if (k.status === 'fulfilled') stops.push(() => k.value.cleanup());
    if (b.status === 'fulfilled') stops.push(() => b.value.stop());
    if (k.status === 'rejected') throw k.reason;
    if (b.status === 'rejected') throw b.reason;
    const [kernel, barbican] = [k.value, b.value];
    const tap = await startInterposer(barbican.url);
    stops.push(() => tap.stop());
    const direct = await barbicanBackend.create(barbicanBackend.optionsSchema.parse({ endpoint: barbican.url }), { allocator: plainAllocator() });
    stops.push(() => direct.close());
    const daemon = await kernel.daemon({
      config: {
        key_manager: { backend: 'barbican', barbican: { endpoint: tap.url, timeout: 10, auth: { type: 'none' } } },
        retry: { attempts: 2, base_delay_seconds: 0.1 },
        limits: { max_concurrent_commands: 8 },
        log: { format: 'json' },
      },
    });
    return {
      kernel,
      barbican,
      daemon,
      direct,
      newKey: (projectId) => direct.createKey({ projectId }, { algorithm: 'aes', length: 256 }),
      payloadFetches: (id) => tap.exchanges.filter((e) => e.method === 'GET' && e.path.includes(`/secrets/${id}/payload`)).length,
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
