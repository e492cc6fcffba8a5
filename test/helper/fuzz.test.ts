/**
 * libFuzzer over the helper's frame decoder and every op's field checks
 * (helper/fuzz/fuzz_request.c; ASan + UBSan), for a bounded 20 s from the
 * committed seed corpus. Any crash, sanitizer report or trap fails the test;
 * the input that caused it is left in the temporary directory named in the
 * failure. `make fuzz-helper FUZZ_SECONDS=600` runs it longer.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { repoRoot } from '../helpers/paths.js';

const SECONDS = 20;

describe('helper fuzzing (libFuzzer, bounded)', () => {
  it(`finds no crash in ${SECONDS} s of frames and fields`, async () => {
    const built = spawnSync('make', ['-s', '-C', join(repoRoot, 'helper'), 'fuzz'], { encoding: 'utf8', timeout: 120_000 });
    assert.equal(built.status, 0, `make -C helper fuzz: ${built.stderr}`);
    const work = mkdtempSync(join(tmpdir(), 'portcullis-fuzz-'));
    const corpus = join(work, 'corpus');
    const crashes = join(work, 'crashes') + '/';
    spawnSync('mkdir', ['-p', corpus, crashes]);
    const argv = [`-max_total_time=${SECONDS}`, `-artifact_prefix=${crashes}`, '-print_final_stats=1', corpus, join(repoRoot, 'helper', 'fuzz', 'corpus')];
    const child = spawn(join(repoRoot, 'helper', 'build', 'fuzz-request'), argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    child.stdout.on('data', (d: Buffer) => (log += d.toString()));
    child.stderr.on('data', (d: Buffer) => (log = (log + d.toString()).slice(-200_000)));
    // Bounded: libFuzzer stops itself at max_total_time; a fuzzer that does not is killed.
    const code = await new Promise<number | null>((resolve) => {
      const timer = setTimeout(() => child.kill('SIGKILL'), (SECONDS + 60) * 1000);
      child.on('close', (c) => {
        clearTimeout(timer);
        resolve(c);
      });
    });
    const found = readdirSync(crashes);
    assert.deepEqual(found, [], `libFuzzer left crash inputs in ${crashes}:\n${log.slice(-4000)}`);
    assert.equal(code, 0, `fuzzer exit ${code}; inputs in ${work}:\n${log.slice(-4000)}`);
    const runs = Number(/stat::number_of_executed_units:\s*(\d+)/.exec(log)?.[1] ?? 0);
    assert.ok(runs > 1000, `the fuzzer ran only ${runs} inputs:\n${log.slice(-2000)}`);
    rmSync(work, { recursive: true, force: true });
  });
});
