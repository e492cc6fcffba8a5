/**
 * Who may do what on a real portcullisd's socket, with peers of other uids
 * (child processes, SO_PEERCRED): the socket's own mode and group keep
 * outsiders from connecting at all; a peer in the socket's group with no
 * role gets 403 on every route; an agent may attach and read health but may
 * neither flush nor evict the cache nor read metrics, and its refused
 * requests change nothing. roles.test.ts checks rolesOf() itself; api.test.ts
 * the no-role attach and the agent's cache read.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { validateConfig } from '../../src/config/load.js';
import { openKeyManager } from '../../src/keyclient/open.js';
import { plainAllocator } from '../../src/util/secure-memory.js';
import { startDaemonProcess, type Answer, type DaemonProcess } from '../fixtures/daemon.js';

const asRoot = { skip: process.geteuid?.() === 0 ? false : 'needs root to run peers as other uids' };
const SOCKET_GID = 4242;
const AGENT = 4300;
const NO_ROLE = 4301;
const OUTSIDER = 4302;
const ADMIN = 4303;
const projectId = 'access-project';

const codeOf = (answer: Answer) => (answer.body as { error?: { code: string } }).error?.code;

describe('portcullisd access by peer credentials', asRoot, () => {
  let dir: string;
  let daemon: DaemonProcess;
  let keyId: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'portcullisd-access-'));
    const keyManager = { backend: 'local', local: { path: join(dir, 'keystore.db'), kek_file: join(dir, 'kek') } };
    const km = await openKeyManager(validateConfig({ key_manager: keyManager }, 'access').config, { allocator: plainAllocator() });
    keyId = await km.createKey({ projectId }, { algorithm: 'aes', length: 256 });
    await km.close();
    daemon = await startDaemonProcess({
      dir,
      config: {
        key_manager: keyManager,
        socket: { mode: '0660', group: SOCKET_GID },
        roles: { agent: { uids: [AGENT] }, admin: { uids: [ADMIN] } },
        log: { format: 'json' },
      },
    });
    // As root (admin): a key fetch puts one entry in the cache (the attach then fails on the missing device).
    await daemon.call('PUT', '/v1/volumes/access1', { device: '/dev/portcullis-access-none', key: { id: keyId }, project_id: projectId });
  });
  after(async () => {
    await daemon?.stop();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  const entries = async () => ((await daemon.call('GET', '/v1/cache')).body as { entries: number }).entries;

  it('the socket has the configured mode and group', () => {
    const st = statSync(daemon.socketPath);
    assert.deepEqual([st.mode & 0o777, st.gid], [0o660, SOCKET_GID]);
  });

  it('a peer outside the socket group cannot connect at all', async () => {
    await assert.rejects(daemon.callAs(OUTSIDER, OUTSIDER, 'GET', '/v1/health'), /EACCES/);
  });

  it('a peer in the socket group with no role gets 403 E_PEER_FORBIDDEN on every route', async () => {
    const routes: Array<[string, string]> = [['GET', '/v1/health'], ['GET', '/v1/volumes'], ['GET', '/v1/volumes/access1'], ['DELETE', '/v1/volumes/access1'], ['GET', '/v1/cache'], ['DELETE', '/v1/cache'], ['GET', '/metrics']];
    for (const [method, path] of routes) {
      const answer = await daemon.callAs(NO_ROLE, SOCKET_GID, method, path);
      assert.deepEqual([answer.status, codeOf(answer)], [403, 'E_PEER_FORBIDDEN'], `${method} ${path}`);
    }
  });

  it('an agent may read health and volumes, but not flush, evict, read the cache or metrics; the refusals change nothing', async () => {
    assert.equal(await entries(), 1);
    for (const path of ['/v1/health', '/v1/volumes']) {
      assert.notEqual((await daemon.callAs(AGENT, SOCKET_GID, 'GET', path)).status, 403, path);
    }
    for (const [method, path] of [['DELETE', '/v1/cache'], ['DELETE', `/v1/cache/${keyId}`], ['GET', '/v1/cache'], ['GET', '/metrics']] as const) {
      const answer = await daemon.callAs(AGENT, SOCKET_GID, method, path);
      assert.deepEqual([answer.status, codeOf(answer)], [403, 'E_PEER_FORBIDDEN'], `${method} ${path}`);
    }
    assert.equal(await entries(), 1, "the agent's flush and evict did nothing");
  });

  it('an admin by uid may read metrics and the cache, and flush it', async () => {
    assert.equal((await daemon.callAs(ADMIN, SOCKET_GID, 'GET', '/metrics')).status, 200);
    assert.equal((await daemon.callAs(ADMIN, SOCKET_GID, 'GET', '/v1/cache')).status, 200);
    const flushed = await daemon.callAs(ADMIN, SOCKET_GID, 'DELETE', '/v1/cache');
    assert.deepEqual([flushed.status, flushed.body], [200, { flushed: 1 }]);
    assert.equal(await entries(), 0);
  });
});
