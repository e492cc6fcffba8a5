/**
 * KMIP get() latency against a real PyKMIP server on 127.0.0.1: over the
 * kmip backend's connection pool (TLS and DiscoverVersions once per
 * connection) vs a fresh backend per request (a TLS handshake and a version
 * negotiation every time), sequential, then 200 concurrent gets over a pool
 * of 4. Prints medians, p90 and TLS handshake counts; asserts nothing.
 * Run: make build && node dist/bench/kmip-latency.js [ROUNDS]
 */
import { kmipBackend, type KmipKeyManager } from '../src/keyclient/backends/kmip/backend.js';
import { plainAllocator } from '../src/util/secure-memory.js';
import { startKmip } from '../test/fixtures/kmip-server.js';

const rounds = Number(process.argv[2] ?? 200);
const allocator = plainAllocator();
const ctx = { projectId: 'bench' };
const kmip = await startKmip();
const open = async (poolSize: number) => (await kmipBackend.create(kmipBackend.optionsSchema.parse(kmip.options(kmip.client, { pool_size: poolSize })), { allocator })) as KmipKeyManager;
const quantile = (xs: number[], q: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * q))] ?? NaN;
const ms = (start: bigint) => Number(process.hrtime.bigint() - start) / 1e6;
const show = (label: string, xs: number[], extra: string) => console.log(`${label.padEnd(44)} median ${quantile(xs, 0.5).toFixed(2)} ms  p90 ${quantile(xs, 0.9).toFixed(2)} ms  ${extra}`);

try {
  const pooled = await open(4);
  const id = await pooled.createKey(ctx, { algorithm: 'aes', length: 256 });
  for (let i = 0; i < 10; i += 1) (await pooled.get(ctx, id)).zeroize(); // warm up
  const warmHandshakes = pooled.client.stats().handshakes;

  const pooledTimes: number[] = [];
  for (let i = 0; i < rounds; i += 1) {
    const start = process.hrtime.bigint();
    (await pooled.get(ctx, id)).zeroize();
    pooledTimes.push(ms(start));
  }
  show(`get() over the pool, sequential (${rounds})`, pooledTimes, `handshakes during the run: ${pooled.client.stats().handshakes - warmHandshakes}`);

  const freshTimes: number[] = [];
  let freshHandshakes = 0;
  for (let i = 0; i < rounds; i += 1) {
    const start = process.hrtime.bigint();
    const fresh = await open(1);
    (await fresh.get(ctx, id)).zeroize();
    freshTimes.push(ms(start));
    freshHandshakes += fresh.client.stats().handshakes;
    await fresh.close();
  }
  show(`get() on a fresh connection each (${rounds})`, freshTimes, `handshakes: ${freshHandshakes}`);

  const burst = await open(4);
  const start = process.hrtime.bigint();
  await Promise.all(Array.from({ length: 200 }, async () => (await burst.get(ctx, id)).zeroize()));
  console.log(`${'200 concurrent get()s, pool of 4'.padEnd(44)} total ${ms(start).toFixed(1)} ms  handshakes: ${burst.client.stats().handshakes}`);
  await burst.close();
  await pooled.close();
} finally {
  await kmip.stop();
}
