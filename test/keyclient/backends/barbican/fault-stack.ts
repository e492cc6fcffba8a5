/**
 * What the Barbican fault tests (faults-*.test.ts) share: a real Keystone, a
 * real Barbican behind it (keystone pipeline), the fault proxy in front of
 * Barbican, a direct client for making keys, and the stacks the daemon and
 * the CLI build from a validated config, talking through the proxy.
 */
import { after, before } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { validateConfig } from '../../../../src/config/load.js';
import { barbicanBackend } from '../../../../src/keyclient/backends/barbican/backend.js';
import { cachingKeyManager, type CachingKeyManager } from '../../../../src/keyclient/cache.js';
import type { KeyManager, RequestContext } from '../../../../src/keyclient/key-manager.js';
import { openKeyManager } from '../../../../src/keyclient/open.js';
import { retryingKeyManager } from '../../../../src/keyclient/retry.js';
import { plainAllocator } from '../../../../src/util/secure-memory.js';
import { startBarbican, type BarbicanServer } from '../../../fixtures/barbican-server.js';
import { startFaultProxy, type Attempt, type FaultProxy } from '../../../fixtures/fault-proxy.js';
import { startKeystone, type KeystoneServer } from '../../../fixtures/keystone-server.js';
import { waitUntil } from '../../../helpers/wait.js';

export interface StackOptions {
  cache?: object;
  retry?: object;
  barbican?: object;
}

export interface FaultStack {
  keystone: KeystoneServer;
  barbican: BarbicanServer;
  proxy: FaultProxy;
  /** Straight to Barbican, not through the proxy: for making and deleting keys. */
  direct: KeyManager;
  /** Project A, where portcullis' service user may create and read. */
  ctx: RequestContext;
  /**
   * The daemon's stack through the proxy, cache(retry(barbican)) as openCachedKeyManager() builds it:
   * 3 attempts, 50 ms base backoff, 2 s timeout unless overridden. `retryWaits` lists each wait
   * (ms) the retry layer chose between attempts, in order: what it waited for, not how long it took.
   */
  openStack(options?: StackOptions, now?: () => number): Promise<CachingKeyManager & { retryWaits: number[] }>;
  /** The CLI's stack through the proxy, retry(barbican) (openKeyManager(), no cache). */
  openRetrying(options?: StackOptions): Promise<KeyManager>;
  /** Runs `use` with a fresh openStack(options), then clears the proxy's faults and closes the stack, whatever happened. */
  usingStack(options: StackOptions, use: (km: CachingKeyManager & { retryWaits: number[] }) => Promise<void>, now?: () => number): Promise<void>;
  /** Runs `fn` with Barbican stopped (SIGSTOP: connections hang, nothing answers), and lets it go on after, whatever happened. */
  whileStopped(fn: () => Promise<void>): Promise<void>;
  newKey(): Promise<string>;
  /** Resolves once every exchange the proxy received was answered or torn down (bounded: 1 s). */
  noneInFlight(): Promise<void>;
  /** Resolves once no client connection to the proxy is open at all, idle ones included (bounded: 1 s). */
  noConnections(): Promise<void>;
  stop(): Promise<void>;
}

const allocator = plainAllocator();

/** One stack for a test file: started before its tests (handed to `use`), stopped after them. */
export function faultStackForFile(use: (stack: FaultStack) => void): void {
  let started: FaultStack | undefined;
  before(async () => {
    started = await startFaultStack();
    use(started);
  });
  after(async () => started?.stop());
}

export async function startFaultStack(): Promise<FaultStack> {
  const stops: Array<() => Promise<unknown>> = [];
  const stop = async () => {
    for (const s of stops.splice(0).reverse()) await s().catch(() => undefined);
  };
  try {
    const keystone = await startKeystone();
    stops.push(() => keystone.stop());
    const barbican = await startBarbican({ pipeline: 'keystone', keystone });
    stops.push(() => barbican.stop());
    const proxy = await startFaultProxy(barbican.url);
    stops.push(() => proxy.stop());
    const configFor = (endpoint: string, extra: StackOptions = {}) => {
      const user = keystone.users.portcullis;
      const auth = { type: 'password', auth_url: keystone.authUrl, username: user.name, password: user.password };
      return validateConfig(
        {
          key_manager: { backend: 'barbican', barbican: { endpoint, timeout: 2, auth, ...extra.barbican } },
          cache: { sweep_interval_seconds: 0, ...extra.cache },
          retry: { attempts: 3, base_delay_seconds: 0.05, max_delay_seconds: 5, ...extra.retry },
        },
        'fault-stack',
      ).config;
    };
    const direct = await openKeyManager(configFor(barbican.url), { allocator });
    stops.push(() => direct.close());
    const ctx = { projectId: keystone.projects.a.id };
    const stack: FaultStack = {
      keystone,
      barbican,
      proxy,
      direct,
      ctx,
      async openStack(options = {}, now) {
        const config = configFor(proxy.url, options);
        const deps = now === undefined ? { allocator } : { allocator, now };
        // openCachedKeyManager()'s composition, with the retry layer's sleep observed (it still really waits).
        const barbicanOptions = config.key_manager.barbican;
        if (barbicanOptions === undefined) throw new Error('the validated config has no barbican section');
        const backend = await barbicanBackend.create(barbicanOptions, deps);
        const retryWaits: number[] = [];
        const sleep = async (ms: number, signal: AbortSignal) => {
          retryWaits.push(ms);
          await delay(ms, undefined, { signal }).catch(() => undefined);
        };
        return Object.assign(cachingKeyManager(retryingKeyManager(backend, config.retry, { sleep }), config.cache, deps), { retryWaits });
      },
      openRetrying: (options = {}) => openKeyManager(configFor(proxy.url, options), { allocator }),
      async usingStack(options, use, now) {
        const km = await stack.openStack(options, now);
        try {
          await use(km);
        } finally {
          proxy.clear();
          await km.close();
        }
      },
      async whileStopped(fn) {
        barbican.signal('SIGSTOP');
        try {
          await fn();
        } finally {
          barbican.signal('SIGCONT');
        }
      },
      newKey: () => direct.createKey(ctx, { algorithm: 'aes', length: 256 }),
      noneInFlight: () => waitUntil('no exchange left open at the proxy', () => proxy.inFlight() === 0, { timeoutMs: 1000, intervalMs: 10, describe: () => `in flight: ${proxy.inFlight()}` }),
      noConnections: () => waitUntil('no connection left open to the proxy', () => proxy.openConnections() === 0, { timeoutMs: 1000, intervalMs: 10, describe: () => `open: ${proxy.openConnections()}` }),
      stop,
    };
    return stack;
  } catch (err) {
    await stop();
    throw err;
  }
}

export const bytesOf = async (km: KeyManager, ctx: RequestContext, id: string): Promise<Buffer> => Buffer.from((await km.get(ctx, id)).bytes());
export const toSecret = (id: string) => (a: Attempt): boolean => a.method === 'GET' && a.path === `/v1/secrets/${id}`;
export const toPayload = (id: string) => (a: Attempt): boolean => a.method === 'GET' && a.path === `/v1/secrets/${id}/payload`;
export const detailsOf = (err: Error): Record<string, unknown> => (err as unknown as { details: Record<string, unknown> }).details;
