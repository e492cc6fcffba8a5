#!/usr/bin/env node
// Runs the compiled test files (dist/test/**/*.test.js) with Node's test runner.
// Arguments narrow the run: `node scripts/run-tests.mjs keyclient/cache` runs files whose path contains that text.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const testRoot = join(root, 'dist', 'test');

function walk(dir) {
  return readdirSync(dir).flatMap((entry) => {
    const path = join(dir, entry);
    return statSync(path).isDirectory() ? walk(path) : [path];
  });
}

const filters = process.argv.slice(2);
const files = walk(testRoot)
  .filter((f) => f.endsWith('.test.js'))
  .filter((f) => filters.length === 0 || filters.some((needle) => relative(testRoot, f).includes(needle)))
  .sort();
if (files.length === 0) {
  console.error(`no test files match ${filters.join(' ') || '(all)'} under ${testRoot}; did the build run?`);
  process.exit(1);
}
// Files spend most of their time waiting on real servers (Barbican, Keystone), so run two at once even on 2 cores.
const concurrency = process.env.TEST_CONCURRENCY ?? '2';
// Tests that drive whole systems (test/fixtures/diagnostics.ts) leave what they saw here on failure.
const diagnostics = join(root, '.cache', 'test-diagnostics');
rmSync(diagnostics, { recursive: true, force: true });
const result = spawnSync(
  process.execPath,
  ['--test', '--test-reporter=spec', `--test-concurrency=${concurrency}`, '--test-timeout=300000', ...files],
  { stdio: 'inherit', cwd: root, env: { ...process.env, PORTCULLIS_TEST_DIAGNOSTICS: diagnostics } },
);
if (result.status !== 0 && existsSync(diagnostics)) {
  // Last, so that a CI log's tail has them; each file is capped so the summary above stays visible too.
  for (const file of readdirSync(diagnostics).sort()) {
    const lines = readFileSync(join(diagnostics, file), 'utf8').split('\n');
    console.log(`\n# diagnostics from failed tests (${file}${lines.length > 200 ? `, last 200 of ${lines.length} lines` : ''}):`);
    console.log(lines.slice(-200).join('\n'));
  }
}
process.exit(result.status ?? 1);
