import assert from 'node:assert/strict';
import { cp, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, it } from 'node:test';
import { addonPath, isDumpable } from '../../native/index.js';
import { nativeErrors } from '../../native/errors.js';
import { repoRoot } from '../helpers/paths.js';

/**
 * A copy of the compiled loader in a package of its own that has native/binding.gyp
 * but no build, as a checkout looks before `npm ci`. Moving the real build away
 * instead would break other test files running at the same time.
 */
async function unbuiltCopy(): Promise<{ root: string; index: string }> {
  const root = await mkdtemp(join(tmpdir(), 'portcullis-unbuilt-'));
  await writeFile(join(root, 'package.json'), '{"type":"module"}\n');
  await mkdir(join(root, 'native'));
  await writeFile(join(root, 'native', 'binding.gyp'), '{}\n');
  await mkdir(join(root, 'dist', 'src'), { recursive: true });
  await cp(join(repoRoot, 'dist', 'src', 'errors.js'), join(root, 'dist', 'src', 'errors.js'));
  await cp(join(repoRoot, 'dist', 'native'), join(root, 'dist', 'native'), { recursive: true });
  return { root, index: join(root, 'dist', 'native', 'index.js') };
}

describe('native/index loader', () => {
  it('addonPath is native/build/Release/portcullis_native.node under the package root', () => {
    assert.equal(addonPath, join(repoRoot, 'native', 'build', 'Release', 'portcullis_native.node'));
    assert.equal(typeof isDumpable(), 'boolean', 'the addon built by npm ci loads from there');
  });

  it('isDumpable() and every other call throws E_NATIVE_MISSING with advice when the addon was not built; importing still works', async () => {
    const { root, index } = await unbuiltCopy();
    try {
      const mod: unknown = await import(pathToFileURL(index).href);
      const call = typeof mod === 'object' && mod !== null ? Reflect.get(mod, 'isDumpable') : undefined;
      assert.equal(typeof call, 'function', 'importing the loader does not need the addon');
      assert.throws(() => (call as () => boolean)(), {
        name: 'NativeError',
        code: 'E_NATIVE_MISSING',
        message: 'native addon not built (native/build/Release/portcullis_native.node missing); run npm ci or make build',
        details: { path: join(root, 'native', 'build', 'Release', 'portcullis_native.node') },
      });
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  it('nativeErrors registers every code the C sources throw', async () => {
    const dir = join(repoRoot, 'native', 'src');
    const sources = await Promise.all((await readdir(dir)).map((name) => readFile(join(dir, name), 'utf8')));
    const thrown = new Set(sources.flatMap((text) => [...text.matchAll(/"(E_NATIVE_[A-Z_]+)"/g)].map((m) => m[1])));
    assert.ok(thrown.size >= 3, `found ${thrown.size} codes in native/src`);
    for (const code of thrown) assert.ok(code !== undefined && Object.hasOwn(nativeErrors, code), `${code} is in nativeErrors`);
  });
});
