/**
 * The service core (attach pipeline, volumes, ephemeral disks, erase) over
 * the named fake host (test/luks/fake-host.ts) and a real embedded local
 * keystore: host-level specifications of what the services decide, with the
 * commands they would run recorded instead of a kernel. The same behaviour
 * on a real kernel is in the *.vm tests.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { configSchema } from '../../../src/config/schema.js';
import type { CachingKeyManager } from '../../../src/keyclient/cache.js';
import { openCachedKeyManager } from '../../../src/keyclient/open.js';
import { plainAllocator } from '../../../src/util/secure-memory.js';
import { createLuksDriver } from '../../../src/luks/driver.js';
import { createLogger } from '../../../src/daemon/log.js';
import { createMetrics } from '../../../src/daemon/metrics.js';
import { logOptionsSchema, luksOptionsSchema, type LuksOptions } from '../../../src/config/daemon-options.js';
import type { Peer } from '../../../src/daemon/api/peer.js';
import type { ServiceDeps } from '../../../src/daemon/service/context.js';
import { serviceLocks } from '../../../src/daemon/service/lock-keys.js';
import { volumeService, type VolumeService } from '../../../src/daemon/service/volumes.js';
import { ephemeralService, type EphemeralService } from '../../../src/daemon/service/ephemeral.js';
import { volumeRegistry, type VolumeRegistry } from '../../../src/daemon/volume-registry.js';
import { diskHost, type DiskHost } from './disk-host.js';

export const peer: Peer = { uid: 0, gid: 0, pid: 1, groups: [] };

export interface ServiceKit {
  host: DiskHost;
  keys: CachingKeyManager;
  registry: VolumeRegistry;
  volumes: VolumeService;
  ephemeral: EphemeralService;
  /** The passphrase (hex of the key) each device's keyslot opens with; absent once erased. */
  secrets: Map<string, string>;
  /** The daemon's Prometheus text. */
  metricsText(): Promise<string>;
  /** The daemon's log lines so far (JSON). */
  logs: string[];
  /** cryptsetup argv run so far, as lines. */
  commands(): string[];
  /** A second daemon on the same files (a restart): `bootId` as the kernel says it. */
  restart(bootId?: string): ServiceKit;
  close(): Promise<void>;
}

/** `keyManager`: the config's key_manager section (default: a local keystore in a temporary directory). */
export async function serviceKit(options: { devices?: Record<string, { rdev: string; head?: Buffer }>; luks?: Partial<LuksOptions>; keyManager?: { backend: string } & Record<string, unknown> } = {}): Promise<ServiceKit> {
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-service-'));
  const config = configSchema.parse({ key_manager: options.keyManager ?? { backend: 'local', local: { path: join(dir, 'keystore.db'), kek_file: join(dir, 'kek') } } });
  const backend = config.key_manager.backend;
  const keys = await openCachedKeyManager(config, { allocator: plainAllocator() });
  const secrets = new Map<string, string>();
  const host = diskHost(options.devices ?? { '/dev/vdb': { rdev: '253:16' }, '/dev/vdc': { rdev: '253:32' } }, secrets);
  const logs: string[] = [];
  const sink = new PassThrough();
  sink.on('data', (chunk: Buffer) => logs.push(...chunk.toString().split('\n').filter((l) => l !== '')));
  const log = createLogger(logOptionsSchema.parse({ format: 'json', level: 'debug' }), sink);
  const luks = luksOptionsSchema.parse(options.luks ?? {});
  const build = (bootId: string): ServiceKit => {
    const registry = volumeRegistry(join(dir, 'volumes.json'), log, { bootId });
    const deps: ServiceDeps = { keys: () => keys, backend: () => backend, luks: () => luks, driver: createLuksDriver({ ops: host }), log, metrics: createMetrics(() => keys.stats()), registry };
    const locks = serviceLocks();
    return {
      host, keys, registry, secrets, logs, metricsText: () => deps.metrics.text(),
      volumes: volumeService(deps, locks),
      ephemeral: ephemeralService(deps, locks),
      commands: () => host.calls.filter((c) => c.argv[0] === 'cryptsetup' && c.argv[1] !== '--help').map((c) => c.argv.join(' ')),
      restart: (next = bootId) => build(next),
      close: () => keys.close(),
    };
  };
  return build('boot-1');
}
