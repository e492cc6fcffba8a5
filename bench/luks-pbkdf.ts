/**
 * Format, open and close times of a LUKS volume with cryptsetup's default
 * PBKDF vs portcullis' fast one (pbkdf2, 1000 iterations), on the real kernel
 * of the test VM (or this host in direct mode). Prints figures; asserts nothing.
 * Run: npm run build && node dist/bench/luks-pbkdf.js [ROUNDS]
 */
import { randomBytes } from 'node:crypto';
import { createLuksDriver, type FormatOptions } from '../src/luks/driver.js';
import { privilegedRunner } from '../test/vm/index.js';

const rounds = Number(process.argv[2] ?? 3);
const runner = await privilegedRunner();
const driver = createLuksDriver({ runner });

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
console.log(['variant'.padEnd(34), 'format'.padStart(8), 'open'.padStart(8), 'close'.padStart(8)].join(' '));
try {
  for (const [label, options] of variants) {
    const figures = { format: [] as number[], open: [] as number[], close: [] as number[] };
    for (let i = 0; i < rounds; i += 1) {
      const dev = await sh(`f=$(mktemp ${runner.scratchDir}/bench.XXXXXX) && truncate -s 24M $f && losetup --find --show $f`);
      const key = randomBytes(64);
      figures.format.push(await time(() => driver.format(dev, key, options)));
      figures.open.push(await time(() => driver.open(dev, 'bench', key, { type: options.type })));
      figures.close.push(await time(() => driver.close('bench')));
      await sh(`losetup -d ${dev}`);
    }
    console.log([label.padEnd(34), ...[figures.format, figures.open, figures.close].map((xs) => median(xs).toFixed(0).padStart(8))].join(' '));
  }
} finally {
  await runner.stop();
}
