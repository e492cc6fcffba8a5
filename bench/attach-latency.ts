/**
 * Attach latency through a real portcullisd over its socket, with keys from a
 * real Barbican (noauth, 127.0.0.1): a cache miss (first attach of a key) vs
 * a cache hit (the same key again), for luks2 (pre-formatted, fast PBKDF) and
 * plain. On the test VM's kernel, or this host in direct mode. Prints
 * figures (medians of ROUNDS and the daemon's own timings_ms); asserts nothing.
 * Run: make build && node dist/bench/attach-latency.js [ROUNDS]
 */
import { barbicanBackend } from '../src/keyclient/backends/barbican/backend.js';
import { plainAllocator } from '../src/util/secure-memory.js';
import { startBarbican } from '../test/fixtures/barbican-server.js';
import { daemonKernel } from '../test/daemon/vm-setup.js';

interface Attached {
  key_source: string;
  timings_ms: { key: number; format: number; open: number; total: number };
}

const rounds = Number(process.argv[2] ?? 5);
const kernel = await daemonKernel();
const barbican = await startBarbican({ pipeline: 'noauth' });
const direct = await barbicanBackend.create(barbicanBackend.optionsSchema.parse({ endpoint: barbican.url }), { allocator: plainAllocator() });
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;

try {
  const daemon = await kernel.daemon({ config: { key_manager: { backend: 'barbican', barbican: { endpoint: barbican.url, auth: { type: 'none' } } }, log: { format: 'json' } } });
  console.log(`kernel: ${kernel.runner.where} (${kernel.runner.mode}); ${rounds} rounds; milliseconds, client-measured total (daemon's key/open/total)`);
  for (const provider of ['luks2', 'plain'] as const) {
    const rows: Record<'miss' | 'hit', Array<{ wall: number; a: Attached }>> = { miss: [], hit: [] };
    for (let i = 0; i < rounds; i++) {
      const dev = await kernel.loopDevice(provider === 'luks2' ? 32 : 8);
      const key = await direct.createKey({ projectId: 'bench' }, { algorithm: 'aes', length: 512 });
      const name = `pd-bench-${provider}-${i}`;
      if (provider === 'luks2') {
        // Format outside the measurement: attach latency is about opening, not first use.
        await daemon.call('PUT', `/v1/volumes/${name}`, { device: dev, provider, key: { id: key }, project_id: 'bench', format: 'if-blank' });
        await daemon.call('DELETE', `/v1/volumes/${name}`);
        await daemon.call('DELETE', `/v1/cache/${key}`);
      }
      for (const kind of ['miss', 'hit'] as const) {
        const start = process.hrtime.bigint();
        const answer = await daemon.call('PUT', `/v1/volumes/${name}`, { device: dev, provider, key: { id: key }, project_id: 'bench' });
        const wall = Number(process.hrtime.bigint() - start) / 1e6;
        if (answer.status !== 200) throw new Error(answer.text);
        rows[kind].push({ wall, a: answer.body as Attached });
        await daemon.call('DELETE', `/v1/volumes/${name}`);
      }
    }
    for (const kind of ['miss', 'hit'] as const) {
      const r = rows[kind];
      const sources = [...new Set(r.map((x) => x.a.key_source))].join('/');
      console.log(
        `${provider.padEnd(5)} cache ${kind.padEnd(4)} (key from ${sources.padEnd(7)}): total ${median(r.map((x) => x.wall)).toFixed(0).padStart(5)}  ` +
          `(key ${median(r.map((x) => x.a.timings_ms.key))}, open ${median(r.map((x) => x.a.timings_ms.open))}, daemon total ${median(r.map((x) => x.a.timings_ms.total))})`,
      );
    }
  }
} finally {
  await kernel.cleanup();
  await direct.close();
  await barbican.stop();
}
