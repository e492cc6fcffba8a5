/**
 * Format, open and close times of a LUKS volume with cryptsetup's default
 * PBKDF vs portcullis' fast one (pbkdf2, 1000 iterations), on the real kernel
 * of the test VM (or this host in direct mode); then upgradeKeyslot() (a no-op
 * on a fast slot) and the open after it. Prints figures; asserts nothing.
 * Run: npm run build && node dist/bench/luks-pbkdf.js [ROUNDS]
 */
import { randomBytes } from 'node:crypto';
import { createLuksDriver, type FormatOptions } from '../src/luks/driver.js';
import { privilegedRunner } from '../test/vm/index.js';

const rounds = Number(process.argv[2] ?? 3);
const runner = await privilegedRunner();
const driver = createLuksDriver({ ops: runner.ops });

async function sh(script: string): Promise<string> {
  const r = await runner.run(['sh', '-c', script], { timeoutMs: 300_000 });
  if (r.code !== 0) throw new Error(`${script}: ${r.stderr.toString()}`);
  return r.stdout.toString().trim();
}

async function time<T>(fn: () => Promise<T>): Promise<number> {
  const start = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - start) / 1e6;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;

const variants: Array<[string, FormatOptions]> = [
  ['luks1, default PBKDF', { type: 'luks', pbkdf: { type: 'default' } }],
  ['luks1, fast pbkdf2/1000', { type: 'luks' }],
  ['luks2, default PBKDF (argon2id)', { type: 'luks2', pbkdf: { type: 'default' } }],
  ['luks2, fast pbkdf2/1000', { type: 'luks2' }],
];

console.log(`runner: ${runner.mode} (${runner.where}); ${rounds} rounds; medians in ms`);
const columns = ['format', 'open', 'close', 'upgrade', 'reopen'] as const;
console.log(['variant'.padEnd(34), ...columns.map((c) => c.padStart(8))].join(' '));
try {
  for (const [label, options] of variants) {
    const figures: Record<(typeof columns)[number], number[]> = { format: [], open: [], close: [], upgrade: [], reopen: [] };
    for (let i = 0; i < rounds; i += 1) {
      const dev = await sh(`f=$(mktemp ${runner.scratchDir}/bench.XXXXXX) && truncate -s 24M $f && losetup --find --show $f`);
      const key = randomBytes(64);
      figures.format.push(await time(() => driver.format(dev, key, options)));
      figures.open.push(await time(() => driver.open(dev, 'bench', key, { type: options.type })));
      figures.close.push(await time(() => driver.close('bench')));
      figures.upgrade.push(await time(() => driver.upgradeKeyslot(dev, key)));
      figures.reopen.push(await time(() => driver.open(dev, 'bench', key, { type: options.type })));
      await driver.close('bench');
      await sh(`losetup -d ${dev}`);
    }
    console.log([label.padEnd(34), ...columns.map((c) => median(figures[c]).toFixed(0).padStart(8))].join(' '));
  }
} finally {
  await runner.stop();
}
