/**
 * python/portcullis_brick's own unit tests (python/tests), run with Debian's
 * Python, which has os-brick (python3-os-brick, in the Makefile's
 * DEB_PACKAGES). Each Python test becomes a node test of its own, so the
 * runner's closing line counts them and a failure is named.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { repoRoot } from '../helpers/paths.js';

const python = '/usr/bin/python3';
const dir = join(repoRoot, 'python');

/**
 * unittest -v prints "name (module.Class.name) ... ok" per test; a log line
 * the test printed may split it, the verdict then standing on a line of its own.
 */
function outcomes(output: string): Map<string, string> {
  const results = new Map<string, string>();
  const verdict = /(?:^|\.\.\. )(ok|FAIL|ERROR|skipped.*|expected failure|unexpected success)$/;
  let current: string | undefined;
  for (const line of output.split('\n')) {
    const start = /^test\w* \(([\w.]+)\)/.exec(line);
    if (start !== null) current = start[1];
    const v = verdict.exec(line);
    if (current !== undefined && v !== null) {
      results.set(current, v[1] ?? '');
      current = undefined;
    }
  }
  return results;
}

// Runs once, when the file loads: the tests below are its verdicts.
const run = spawnSync(python, ['-m', 'unittest', 'discover', '-v', '-s', 'tests', '-t', '.'], {
  cwd: dir,
  encoding: 'utf8',
  env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C.UTF-8', PYTHONDONTWRITEBYTECODE: '1' },
  timeout: 180_000,
});
const output = `${run.stdout}${run.stderr}`;
const results = outcomes(output);
const total = Number(/^Ran (\d+) tests? in/m.exec(output)?.[1] ?? Number.NaN);

describe('python/portcullis_brick unit tests', () => {
  it('unittest ran, found tests and read every verdict', () => {
    assert.equal(run.error, undefined, `could not run ${python}: ${String(run.error)}`);
    assert.ok(total > 0, `no "Ran N tests" line:\n${output}`);
    assert.equal(results.size, total, `read ${results.size} verdicts of ${total}:\n${output}`);
    assert.equal(run.status, 0, `unittest exited ${run.status}:\n${output}`);
  });
  for (const [name, verdict] of results) {
    it(name, () => assert.equal(verdict, 'ok', `${name}: ${verdict}\n${output}`));
  }
});
