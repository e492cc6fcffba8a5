import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, it } from 'node:test';
import { repoRoot } from './helpers/paths.js';

/** Every errors.ts module's registries (exports named *Errors), found by walking the compiled tree (src/ and native/). */
async function registeredCodes(): Promise<Map<string, string>> {
  const srcRoot = join(repoRoot, 'dist', 'src');
  const here = new URL('.', import.meta.url).pathname;
  // Built elsewhere (a helper's private outDir)? Then src is beside this test's build root.
  const builtSrc = statSafe(srcRoot) ? srcRoot : join(here, '..', 'src');
  const files: string[] = [];
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir)) {
      const path = join(dir, entry);
      if (statSync(path).isDirectory()) walk(path);
      else if (entry === 'errors.js') files.push(path);
    }
  };
  walk(builtSrc);
  // native/ sits beside src/ (it is not a layer of src), with one errors module of its own.
  files.push(join(builtSrc, '..', 'native', 'errors.js'));
  const codes = new Map<string, string>();
  for (const file of files) {
    const mod = (await import(pathToFileURL(file).href)) as Record<string, unknown>;
    for (const [exportName, value] of Object.entries(mod)) {
      if (!exportName.endsWith('Errors') || typeof value !== 'object' || value === null) continue;
      for (const [code, description] of Object.entries(value)) {
        assert.ok(!codes.has(code), `${code} is registered twice`);
        codes.set(code, String(description));
      }
    }
  }
  return codes;
}

/**
 * The os-brick encryptor's own codes: the keys of CLIENT_ERRORS in
 * python/portcullis_brick/errors.py (one `'E_X': '...',` per line), read as
 * text so this test needs no Python. Also every quoted E_ code in the package,
 * so that a code raised there is either in that table or one of the daemon's.
 */
function pythonCodes(): { registered: Set<string>; used: Set<string> } {
  const dir = join(repoRoot, 'python', 'portcullis_brick');
  const errors = readFileSync(join(dir, 'errors.py'), 'utf8');
  const table = /^CLIENT_ERRORS = \{\n([\s\S]*?)^\}/m.exec(errors)?.[1] ?? '';
  const registered = new Set([...table.matchAll(/^ {4}'(E_[A-Z0-9_]+)':/gm)].map((m) => m[1] as string));
  const used = new Set<string>();
  for (const file of readdirSync(dir).filter((f) => f.endsWith('.py'))) {
    for (const m of readFileSync(join(dir, file), 'utf8').matchAll(/'(E_[A-Z0-9]+(?:_[A-Z0-9]+)*)'/g)) used.add(m[1] as string);
  }
  return { registered, used };
}

function statSafe(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

describe('docs/errors.md', () => {
  const doc = readFileSync(join(repoRoot, 'docs', 'errors.md'), 'utf8');
  const documented = new Set([...doc.matchAll(/`(E_[A-Z0-9_]+)`/g)].map((m) => m[1] as string));

  it('documents every error code the code can throw', async () => {
    const codes = await registeredCodes();
    assert.ok(codes.size > 10, `found only ${codes.size} codes; is the build tree complete?`);
    const missing = [...codes.keys()].filter((c) => !documented.has(c));
    assert.deepEqual(missing, [], `add these codes to docs/errors.md: ${missing.join(', ')}`);
  });

  it("documents every code the os-brick encryptor raises itself (python/portcullis_brick/errors.py CLIENT_ERRORS)", async () => {
    const { registered, used } = pythonCodes();
    assert.ok(registered.has('E_NO_PROJECT'), `CLIENT_ERRORS in python/portcullis_brick/errors.py was not read, or lacks E_NO_PROJECT: ${[...registered].join(', ')}`);
    const missing = [...registered].filter((c) => !documented.has(c));
    assert.deepEqual(missing, [], `add these codes to docs/errors.md: ${missing.join(', ')}`);
    const codes = await registeredCodes();
    const unknown = [...used].filter((c) => !registered.has(c) && !codes.has(c));
    assert.deepEqual(unknown, [], `python/portcullis_brick uses codes neither CLIENT_ERRORS nor the daemon registers: ${unknown.join(', ')}`);
  });

  it('documents no code that no longer exists', async () => {
    const codes = await registeredCodes();
    const { registered } = pythonCodes();
    const stale = [...documented].filter((c) => !codes.has(c) && !registered.has(c));
    assert.deepEqual(stale, [], `remove these stale codes from docs/errors.md: ${stale.join(', ')}`);
  });

  it('gives every code a stable E_UPPER_SNAKE name', async () => {
    for (const code of (await registeredCodes()).keys()) assert.match(code, /^E_[A-Z0-9]+(_[A-Z0-9]+)*$/);
  });
});
