#!/usr/bin/env node
// Runs the compiled test files (dist/test/**/*.test.js), one node --test process per file,
// under a budget per file, and ends with the slowest files and a "N passed, N failed" line.
// Arguments narrow the run: `node scripts/run-tests.mjs keyclient/cache` runs files whose
// path contains that text.
//
// Scheduling: files spend most of their time waiting on real servers (Barbican, Keystone),
// so host files run two at a time even on 2 cores. A *.vm.test.js file boots a TCG guest
// that fills both cores by itself, so it runs alone: two guests at once (or a guest beside
// Barbican's start-up) double each other's time, which is what pushed files past their limits.
//
// Budgets: every file gets an explicit wall-clock budget (below), at least twice what it
// takes on a 2-core machine; past it the file's whole process group is killed and the file
// fails. Files that used more than half their budget are named, so a slowdown shows in
// every CI log before it becomes a failure.
//
// Skips: scripts/skip-reporter.mjs records every skipped test and suite (node 20's own
// "skipped" total leaves out a skipped describe(), so a suite gated off by root or by a
// container that would not start used to vanish). The summary names each with its reason.
// Where the environment promised everything can run (CI=true: a root Debian machine with
// the packages `make deps` installs), a skip fails the run unless PORTCULLIS_ALLOWED_SKIPS
// (comma-separated substrings of "file: suite > test") lists it; .ci/run lists nothing.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const testRoot = join(root, 'dist', 'test');

/** Seconds a file may run. VM files boot a guest under TCG; host files talk to real servers. */
const BUDGET_SECONDS = { vm: Number(process.env.TEST_VM_BUDGET ?? 600), host: Number(process.env.TEST_HOST_BUDGET ?? 240) };

function walk(dir) {
  return readdirSync(dir).flatMap((entry) => {
    const path = join(dir, entry);
    return statSync(path).isDirectory() ? walk(path) : [path];
  });
}

const filters = process.argv.slice(2);
if (!existsSync(testRoot)) {
  console.error(`no ${relative(root, testRoot)}/; run the build first (make build)`);
  process.exit(1);
}
const files = walk(testRoot)
  .filter((f) => f.endsWith('.test.js'))
  .filter((f) => filters.length === 0 || filters.some((needle) => relative(testRoot, f).includes(needle)))
  .sort();
if (files.length === 0) {
  console.error(`no test files match ${filters.join(' ') || '(all)'} under ${testRoot}; did the build run?`);
  process.exit(1);
}
/** CI promises a root Debian machine with every package: nothing may skip there unless listed. */
const strictSkips = !['', '0', 'false', 'no'].includes((process.env.CI ?? '').toLowerCase());
const allowedSkips = (process.env.PORTCULLIS_ALLOWED_SKIPS ?? '')
  .split(',')
  .map((s) => s.trim())
  .filter((s) => s !== '');
const skipReporter = join(root, 'scripts', 'skip-reporter.mjs');
const skipDir = join(tmpdir(), `portcullis-test-skips-${process.pid}`);
rmSync(skipDir, { recursive: true, force: true });
mkdirSync(skipDir, { recursive: true });
const slots = Math.max(1, Number(process.env.TEST_CONCURRENCY ?? '2'));
// Tests that drive whole systems (test/fixtures/diagnostics.ts) leave what they saw here on failure.
const diagnostics = join(root, '.cache', 'test-diagnostics');
rmSync(diagnostics, { recursive: true, force: true });

const kindOf = (file) => (file.endsWith('.vm.test.js') ? 'vm' : 'host');
// VM files first, longest tail last: they run alone, and host files then fill both slots.
const queue = [...files.filter((f) => kindOf(f) === 'vm'), ...files.filter((f) => kindOf(f) === 'host')];
const results = [];
const started = Date.now();

/** The counts of node's spec reporter summary ("ℹ pass 12"). */
function counts(output) {
  const get = (word) => Number(new RegExp(`^ℹ ${word} (\\d+)$`, 'm').exec(output)?.[1] ?? 0);
  return { tests: get('tests'), pass: get('pass'), fail: get('fail'), cancelled: get('cancelled'), skipped: get('skipped'), todo: get('todo') };
}

function runFile(file) {
  const kind = kindOf(file);
  const budgetMs = BUDGET_SECONDS[kind] * 1000;
  const t0 = Date.now();
  const skipFile = join(skipDir, `${relative(testRoot, file).replaceAll('/', '_')}.jsonl`);
  return new Promise((resolve) => {
    // Its own process group, so that a file over budget is killed with every server it started.
    const reporters = ['--test-reporter=spec', '--test-reporter-destination=stdout', `--test-reporter=${skipReporter}`, `--test-reporter-destination=${skipFile}`];
    const child = spawn(process.execPath, ['--test', ...reporters, `--test-timeout=${budgetMs}`, file], {
      cwd: root,
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, PORTCULLIS_TEST_DIAGNOSTICS: diagnostics },
    });
    let output = '';
    child.stdout.on('data', (c) => (output += c));
    child.stderr.on('data', (c) => (output += c));
    let timedOut = false;
    const killGroup = (signal) => {
      try {
        process.kill(-child.pid, signal);
      } catch {
        // already gone
      }
    };
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup('SIGTERM');
      setTimeout(() => killGroup('SIGKILL'), 10_000).unref();
    }, budgetMs);
    // A server the file started and did not stop may hold its output pipes open: give them a moment, then end the group.
    child.on('exit', () => setTimeout(() => killGroup('SIGKILL'), 5_000).unref());
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      // Whatever the file left behind in its group (a server a failed test did not stop) goes too.
      killGroup('SIGKILL');
      const seconds = (Date.now() - t0) / 1000;
      const c = counts(output);
      const ok = code === 0 && !timedOut;
      if (!ok && c.fail === 0) c.fail = 1; // a crash or a kill counts, even with no test reported failed
      const skips = existsSync(skipFile)
        ? readFileSync(skipFile, 'utf8')
            .split('\n')
            .filter((line) => line !== '')
            .map((line) => JSON.parse(line))
        : [];
      resolve({ file: relative(testRoot, file), kind, seconds, budget: BUDGET_SECONDS[kind], ok, timedOut, code, signal, output, ...c, skips });
    });
  });
}

function report(r) {
  const state = r.ok ? 'ok' : r.timedOut ? `KILLED: over its ${r.budget} s budget` : `FAILED (exit ${r.code ?? r.signal})`;
  console.log(`\n# ${r.file}: ${state}, ${r.seconds.toFixed(1)} s of ${r.budget} s`);
  process.stdout.write(r.output.endsWith('\n') ? r.output : `${r.output}\n`);
}

// Slots: a VM file takes them all, a host file one.
let free = slots;
const waiters = [];
const acquire = (n) =>
  new Promise((resolve) => {
    const tryTake = () => {
      if (free >= n) {
        free -= n;
        resolve();
        return true;
      }
      return false;
    };
    if (!tryTake()) waiters.push(tryTake);
  });
const release = (n) => {
  free += n;
  while (waiters.length > 0 && waiters[0]()) waiters.shift();
};

await Promise.all(
  queue.map(async (file) => {
    const need = kindOf(file) === 'vm' ? slots : 1;
    await acquire(need);
    try {
      const r = await runFile(file);
      results.push(r);
      report(r);
    } finally {
      release(need);
    }
  }),
);

const total = (key) => results.reduce((sum, r) => sum + r[key], 0);
const wall = (Date.now() - started) / 1000;
const slowest = [...results].sort((a, b) => b.seconds - a.seconds).slice(0, 10);
console.log(`\n# the ten slowest files (of ${results.length}; wall ${wall.toFixed(0)} s, ${slots} slot(s), a VM file takes all)`);
console.log('#   seconds  budget  share  file');
for (const r of slowest) {
  console.log(`#  ${r.seconds.toFixed(1).padStart(7)}  ${String(r.budget).padStart(6)}  ${`${Math.round((100 * r.seconds) / r.budget)}%`.padStart(5)}  ${r.file}${r.ok ? '' : '  (failed)'}`);
}
const overHalf = results.filter((r) => r.seconds > r.budget / 2);
for (const r of overHalf) console.log(`# WARNING: ${r.file} used more than half its budget (${r.seconds.toFixed(0)} of ${r.budget} s): make it cheaper or split it`);
mkdirSync(join(root, '.cache'), { recursive: true });
writeFileSync(
  join(root, '.cache', 'test-durations.json'),
  `${JSON.stringify({ wall_seconds: wall, files: results.map(({ file, kind, seconds, budget, ok }) => ({ file, kind, seconds, budget, ok })) }, null, 1)}\n`,
);

const failed = results.filter((r) => !r.ok);
if (failed.length > 0) {
  console.log(`\n# failed files: ${failed.map((r) => r.file).join(', ')}`);
  if (existsSync(diagnostics)) {
    // Last, so that a CI log's tail has them; each file is capped so the summary above stays visible too.
    for (const file of readdirSync(diagnostics).sort()) {
      const lines = readFileSync(join(diagnostics, file), 'utf8').split('\n');
      console.log(`\n# diagnostics from failed tests (${file}${lines.length > 200 ? `, last 200 of ${lines.length} lines` : ''}):`);
      console.log(lines.slice(-200).join('\n'));
    }
  }
}
rmSync(skipDir, { recursive: true, force: true });

// Every skipped test and suite by name with its reason; a skipped suite is one line, its tests never ran.
const skips = results.flatMap((r) => r.skips.map((s) => ({ ...s, label: `${r.file}: ${s.name}` })));
const forbidden = strictSkips ? skips.filter((s) => !allowedSkips.some((needle) => s.label.includes(needle))) : [];
if (skips.length > 0) {
  console.log(`\n# skipped (${skips.length}):`);
  for (const s of skips) {
    const mark = forbidden.includes(s) ? '  NOT ALLOWED' : '';
    console.log(`#   ${s.suite ? 'suite ' : ''}${s.label} # ${s.reason || '(no reason given)'}${mark}`);
  }
}
if (forbidden.length > 0) {
  console.log(
    `# ${forbidden.length} skip(s) not allowed: CI=${process.env.CI} promises a machine where everything runs; ` +
      `PORTCULLIS_ALLOWED_SKIPS ${allowedSkips.length > 0 ? `lists only ${allowedSkips.join(', ')}` : 'is empty'}`,
  );
}
const suites = skips.filter((s) => s.suite).length;
const skipNote =
  skips.length > 0
    ? `, ${skips.length} skipped${suites > 0 ? ` (${suites} of them whole suites)` : ''}${forbidden.length > 0 ? `, ${forbidden.length} of the skips not allowed` : ''}`
    : '';
console.log(`\n${total('pass')} passed, ${total('fail') + total('cancelled')} failed${skipNote}`);
process.exit(failed.length === 0 && forbidden.length === 0 ? 0 : 1);
