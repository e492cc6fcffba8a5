import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { categoryOf, fileOf, formatCategories, formatTop, summarizeProfile, type CpuProfile } from '../../bench/profile.js';

const root = '/repo';

/**
 * A hand-made profile: a request handler in the project calling a native
 * writev, Node's HTTP server, winston (under a symlinked node_modules, as
 * Node reports it: the real path, outside the checkout), a scoped package,
 * GC and idle. Sample times in µs from startTime 1000.
 */
function handMade(): CpuProfile {
  const frame = (functionName: string, url = '') => ({ functionName, url });
  return {
    nodes: [
      { id: 1, callFrame: frame('(root)'), children: [2, 3, 4, 5, 7, 8, 9] },
      { id: 2, callFrame: frame('(program)') },
      { id: 3, callFrame: frame('(idle)') },
      { id: 4, callFrame: frame('(garbage collector)') },
      { id: 5, callFrame: frame('attach', 'file:///repo/dist/src/daemon/service/volumes.js'), children: [6] },
      { id: 6, callFrame: frame('writev') },
      { id: 7, callFrame: frame('parserOnIncoming', 'node:_http_server') },
      { id: 8, callFrame: frame('log', '/elsewhere/node_modules/winston/lib/winston/logger.js'), children: [10] },
      { id: 9, callFrame: frame('', 'file:///elsewhere/node_modules/@scope/pkg/index.js') },
      // A second frame of the same function and file (another call site): grouped with node 5.
      { id: 10, callFrame: frame('attach', 'file:///repo/dist/src/daemon/service/volumes.js') },
    ],
    startTime: 1000,
    // Ten samples 100 µs apart, the last one's time running to endTime (100 µs more).
    samples: [5, 5, 6, 7, 7, 8, 10, 4, 3, 9],
    timeDeltas: [100, 100, 100, 100, 100, 100, 100, 100, 100, 100],
    endTime: 2100,
  };
}

describe('fileOf() and categoryOf()', () => {
  it('names project sources by their .ts path, packages by their path under node_modules, node internals as they are', () => {
    assert.equal(fileOf('file:///repo/dist/src/keyclient/cache.js', root), 'src/keyclient/cache.ts');
    assert.equal(fileOf('/work/main/node_modules/logform/json.js', root), 'logform/json.js');
    assert.equal(fileOf('node:internal/http', root), 'node:internal/http');
    assert.equal(fileOf('', root), '(native)');
    assert.equal(categoryOf('f', 'file:///repo/dist/native/index.js', root), 'portcullis native');
    assert.equal(categoryOf('f', 'node:internal/streams/writable', root), 'node: http/net/streams');
    assert.equal(categoryOf('f', 'node:internal/modules/esm/loader', root), 'node: module loader');
    assert.equal(categoryOf('f', 'node:internal/fs/promises', root), 'node: fs');
    assert.equal(categoryOf('f', 'node:internal/errors', root), 'node: other internals');
    assert.equal(categoryOf('f', '/x/node_modules/@opentelemetry/api/build/index.js', root), 'npm: @opentelemetry/api');
    assert.equal(categoryOf('(program)', '', root), 'V8 outside JS (compile, runtime)');
  });
});

describe('summarizeProfile()', () => {
  it('sums self time per function and file and per category, as shares of every sampled µs', () => {
    const s = summarizeProfile(handMade(), { root });
    assert.equal(s.samples, 10);
    assert.equal(s.totalMs, 1);
    assert.deepEqual(
      s.top.map((e) => [e.name, e.percent, e.category]),
      [
        ['attach (src/daemon/service/volumes.ts)', 30, 'portcullis src/daemon'],
        ['parserOnIncoming (node:_http_server)', 20, 'node: http/net/streams'],
        // A native function is named with the JS function that called it.
        ['writev (native, from attach in src/daemon/service/volumes.ts)', 10, 'native code (V8 builtins, C++ and N-API calls)'],
        ['log (winston/lib/winston/logger.js)', 10, 'npm: winston'],
        ['(garbage collector)', 10, 'GC'],
        ['(idle)', 10, 'idle'],
        ['(anonymous) (@scope/pkg/index.js)', 10, 'npm: @scope/pkg'],
      ],
    );
    assert.deepEqual(s.categories[0], { category: 'portcullis src/daemon', ms: 0.3, percent: 30 });
    assert.equal(
      s.categories.reduce((sum, c) => sum + c.percent, 0),
      100,
    );
  });

  it('counts only the part of each sample inside a window', () => {
    // [1250, 1550] holds the second half of sample 2 (attach, 1200–1300), all of sample 3 (writev,
    // 1300–1400) and 4 (parserOnIncoming, 1400–1500), and the first half of sample 5 (parserOnIncoming again).
    const s = summarizeProfile(handMade(), { root, window: { fromUs: 1250, toUs: 1550 } });
    assert.equal(s.samples, 4);
    assert.deepEqual(
      s.top.map((e) => [e.name, e.percent]),
      [
        ['parserOnIncoming (node:_http_server)', 50],
        ['writev (native, from attach in src/daemon/service/volumes.ts)', 33.3],
        ['attach (src/daemon/service/volumes.ts)', 16.7],
      ],
    );
  });

  it('formats the top entries and the categories for a note, leaving small categories out', () => {
    const s = summarizeProfile(handMade(), { root, top: 2 });
    assert.equal(formatTop(s), 'attach (src/daemon/service/volumes.ts) 30%, parserOnIncoming (node:_http_server) 20%');
    assert.match(formatCategories(s, 15), /^portcullis src\/daemon 30%, node: http\/net\/streams 20% \(5 more under 15% each\)$/);
  });
});
