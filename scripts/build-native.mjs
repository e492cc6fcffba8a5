#!/usr/bin/env node
// Builds native/ (the N-API addon) with node-gyp: run by `npm ci` (the package's install
// script) and by `make build` when the C source changed. Uses the node-gyp npm ships, and
// the Node headers the distribution installed (/usr/include/node) when there are any, so
// nothing is downloaded.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

const root = new URL('..', import.meta.url).pathname;
const candidates = [
  process.env.npm_config_node_gyp,
  '/usr/lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js',
  '/usr/share/nodejs/node-gyp/bin/node-gyp.js',
].filter((p) => p && existsSync(p));
const args = ['rebuild', '--directory=native'];
if (!process.env.npm_config_nodedir && existsSync('/usr/include/node/node_api.h')) args.push('--nodedir=/usr');
const [gyp] = candidates;
const result = gyp
  ? spawnSync(process.execPath, [gyp, ...args], { cwd: root, stdio: 'inherit' })
  : spawnSync('node-gyp', args, { cwd: root, stdio: 'inherit' });
if (result.error) console.error(`build-native: cannot run node-gyp (${result.error.message}); install npm's node-gyp or g++/make/python3`);
process.exit(result.status ?? 1);
