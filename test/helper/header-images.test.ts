/**
 * HEADER's verdict on cryptsetup's own test images (test/fixtures/cryptsetup-images)
 * against the cryptsetup CLI on this host as the oracle: valid or not
 * (`cryptsetup isLuks` and `luksDump` exit status), and for valid headers the
 * LUKS version and UUID. The in-process header reader this replaces agreed on
 * 28 of these 33 and took the five evil LUKS1 headers as valid.
 *
 * PATH must be a block device in the protocol, and this host has no loop
 * devices, so the verdict comes from helper/build/header-verdict FILE: a
 * test-only program built from the same header.c the HEADER op runs (see
 * helper/Makefile), with crypt_init on the file instead of the checked device.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fixturePath, repoRoot } from '../helpers/paths.js';

const IMAGES = fixturePath('cryptsetup-images');
const VERDICT = join(repoRoot, 'helper', 'build', 'header-verdict');
const EVIL = ['evil_hdr-keyslot_overlap', 'evil_hdr-luks_hdr_damage', 'evil_hdr-payload_overwrite', 'evil_hdr-small_luks_device', 'evil_hdr-stripes_payload_dmg'];

interface Verdict {
  status: number;
  header?: { type: string; uuid: string };
  message?: string;
}

function run(argv: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(argv[0] as string, argv.slice(1), { encoding: 'utf8', timeout: 60_000 });
  if (r.error) throw r.error;
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((e) => {
    const p = join(dir, e);
    return statSync(p).isDirectory() ? files(p) : [p];
  });
}

let work: string;
let images: string[];
before(() => {
  assert.ok(existsSync(VERDICT), `${VERDICT} is missing: run make build (or make -C helper)`);
  work = mkdtempSync(join(tmpdir(), 'portcullis-images-'));
  const unpacked = join(work, 'oracle');
  for (const f of readdirSync(IMAGES)) {
    const src = join(IMAGES, f);
    if (f.endsWith('.tar.xz')) assert.equal(run(['tar', '-C', work, '--one-top-level=oracle', '-xJf', src]).code, 0);
    else if (f.endsWith('.xz')) assert.equal(run(['sh', '-c', 'mkdir -p "$2" && xz -dc "$1" > "$2/$3"', 'sh', src, unpacked, f.slice(0, -3)]).code, 0);
  }
  // The CLI and the verdict each read their own copy: LUKS2 loading may repair a header in place.
  cpSync(unpacked, join(work, 'helper'), { recursive: true });
  images = files(unpacked).filter((p) => !/(README|keyfile1)$/.test(p)).map((p) => relative(unpacked, p)).sort();
});
after(() => rmSync(work, { recursive: true, force: true }));

describe('HEADER verdicts on cryptsetup test images agree with the cryptsetup CLI', () => {
  it('unpacks the 33 images named in the README', () => {
    assert.equal(images.length, 33, images.join('\n'));
  });

  it('agrees with isLuks/luksDump on every image: validity, LUKS version, UUID', () => {
    const disagreements: string[] = [];
    for (const image of images) {
      const oracle = join(work, 'oracle', image);
      const isLuks = run(['cryptsetup', 'isLuks', oracle]).code === 0;
      const dump = run(['cryptsetup', 'luksDump', oracle]);
      const valid = isLuks && dump.code === 0;
      const out = run([VERDICT, join(work, 'helper', image)]);
      assert.equal(out.code, 0, `${image}: header-verdict failed: ${out.stderr}`);
      const v = JSON.parse(out.stdout) as Verdict;
      if (valid !== (v.status === 0)) {
        disagreements.push(`${image}: CLI ${valid ? 'valid' : 'invalid'}, helper status ${v.status} ${v.message ?? ''}`);
        continue;
      }
      if (!valid) {
        if (v.status !== 6 || !v.message) disagreements.push(`${image}: invalid, but status ${v.status} without NOT_LUKS and a reason`);
        continue;
      }
      const version = /^Version:\s*(\d)/m.exec(dump.stdout)?.[1];
      const uuid = /^UUID:\s*(\S+)/m.exec(dump.stdout)?.[1];
      if (v.header?.type !== `LUKS${version}` || v.header?.uuid !== uuid) {
        disagreements.push(`${image}: CLI LUKS${version} ${uuid}, helper ${v.header?.type} ${v.header?.uuid}`);
      }
    }
    assert.deepEqual(disagreements, []);
  });

  it('refuses the five evil LUKS1 headers with NOT_LUKS and libcryptsetup\'s reason', () => {
    for (const name of EVIL) {
      const v = JSON.parse(run([VERDICT, join(work, 'helper', name)]).stdout) as Verdict;
      assert.equal(v.status, 6, name);
      assert.match(v.message ?? '', /no valid LUKS header/, name);
    }
  });
});
