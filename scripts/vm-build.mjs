// Shared by vm-run.mjs and vm-suite.mjs: finds the compiled harness.
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const root = new URL('..', import.meta.url).pathname;

/** Takes a leading `--build DIR` off argv; returns the build dir as a URL ending in / and the rest. */
export function pickBuild(argv) {
  let dir = process.env.PORTCULLIS_BUILD_DIR ?? 'dist';
  let rest = argv;
  if (argv[0] === '--build' && argv[1] !== undefined) {
    dir = argv[1];
    rest = argv.slice(2);
  } else if (argv[0]?.startsWith('--build=')) {
    dir = argv[0].slice('--build='.length);
    rest = argv.slice(1);
  }
  const abs = resolve(root, dir);
  if (!existsSync(resolve(abs, 'test/vm/run-cli.js'))) {
    console.error(`no compiled VM harness under ${abs}/test/vm; build first (make build, or npx tsc -p tsconfig.json --outDir ${dir})`);
    process.exit(2);
  }
  return { build: pathToFileURL(`${abs}/`), rest };
}
