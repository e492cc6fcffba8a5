import { spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { CacheAnswer, HealthAnswer, VolumeAnswer } from '../../src/api/wire.js';

/**
 * A STAND-IN for portcullisd, not the daemon: a tiny HTTP server on a unix
 * socket that answers canned Socket API v1 JSON and records what it was
 * sent. It tests the CLI's side of the wire (requests, output, exit codes)
 * until tests against the real daemon process exist (test/daemon/).
 */

export interface Canned {
  status?: number;
  json?: unknown;
  /** Sent as is instead of JSON. */
  raw?: string;
  headers?: Record<string, string>;
  /** Never answer (for timeouts). */
  hang?: boolean;
}

export interface Seen {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  /** Parsed JSON body, or undefined when none was sent. */
  body: unknown;
}

export interface StandIn {
  dir: string;
  socketPath: string;
  /** What the stand-in was asked, oldest first. */
  seen: Seen[];
  /** Sets the answer to `METHOD path` (path with query). */
  answer(method: string, path: string, canned: Canned): void;
  close(): Promise<void>;
}

export const healthOk: HealthAnswer = {
  status: 'ok',
  version: '0.1.0-stand-in',
  uptime_seconds: 3725,
  backend: 'local',
  volumes: 2,
  checks: {
    cryptsetup: { ok: true, detail: 'cryptsetup 2.6.1' },
    dm_crypt: { ok: true, detail: 'dm-crypt v1.23.0' },
    key_manager: { ok: true, detail: 'local keystore /var/lib/portcullis/keystore.db: 3 object(s)' },
  },
};

export const cacheFigures: CacheAnswer = {
  hits: 39, misses: 1, coalesced: 63, stale_served: 0, negative_hits: 0, evictions: 0, expirations: 2, entries: 1, backend_fetches: 1,
};

export const volumeA: VolumeAnswer = {
  name: 'volume-a', mapper_path: '/dev/mapper/volume-a', device: '/dev/loop3', type: 'LUKS2', cipher: 'aes-xts-plain64', key_size_bits: 512,
  size_bytes: 1056964608, read_only: false, in_use: true, origin: 'attached', project_id: 'p1', key_id: '2f0d8c2e-1c1a-4b8e-9d7e-6f3a1b2c3d4e',
};

export const volumeB: VolumeAnswer = {
  name: 'volume-b', mapper_path: '/dev/mapper/volume-b', device: null, type: 'PLAIN', cipher: 'aes-xts-plain64', key_size_bits: 512,
  size_bytes: null, read_only: true, in_use: false, origin: 'adopted', project_id: null, key_id: null,
};

export async function startStandIn(options: { dir?: string } = {}): Promise<StandIn> {
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), 'portcullis-stand-in-'));
  const socketPath = join(dir, 'stand-in.sock');
  const seen: Seen[] = [];
  const answers = new Map<string, Canned>([
    ['GET /v1/health', { json: healthOk }],
    ['GET /v1/cache', { json: cacheFigures }],
    ['GET /v1/volumes', { json: { volumes: [volumeA, volumeB] } }],
  ]);
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: text === '' ? undefined : (JSON.parse(text) as unknown) });
      const canned = answers.get(`${req.method ?? ''} ${req.url ?? ''}`) ?? {
        status: 404,
        json: { error: { code: 'E_ROUTE_NOT_FOUND', message: `stand-in has no answer for ${req.method ?? ''} ${req.url ?? ''}`, details: {} } },
      };
      if (canned.hang === true) return;
      const body = canned.raw ?? JSON.stringify(canned.json ?? {});
      res.writeHead(canned.status ?? 200, { 'content-type': canned.raw === undefined ? 'application/json' : 'text/plain', ...canned.headers });
      res.end(body);
    });
  });
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  chmodSync(socketPath, 0o660);
  return {
    dir,
    socketPath,
    seen,
    answer: (method, path, canned) => void answers.set(`${method} ${path}`, canned),
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      if (options.dir === undefined) rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface CliRun {
  status: number | null;
  stdout: string;
  stderr: string;
}

const cli = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

/**
 * Runs `portcullis ARGS` as a child process. Asynchronously, so the stand-in
 * in this process can answer meanwhile. No config unless the test names one.
 */
export function portcullis(args: string[], options: { env?: NodeJS.ProcessEnv; uid?: number; gid?: number } = {}): Promise<CliRun> {
  const env: NodeJS.ProcessEnv = { PATH: process.env['PATH'] ?? '/usr/bin:/bin', PORTCULLIS_CONFIG: '/nonexistent/portcullis-test.yaml', ...options.env };
  for (const [k, v] of Object.entries(env)) if (v === undefined) delete env[k];
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cli, ...args], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
      ...(options.uid === undefined ? {} : { uid: options.uid }),
      ...(options.gid === undefined ? {} : { gid: options.gid }),
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('error', reject);
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}

/** The JSON error a failing `portcullis --json` prints on stderr. */
export function jsonError(run: CliRun): { code: string; message: string; details: Record<string, unknown> } {
  return (JSON.parse(run.stderr) as { error: { code: string; message: string; details: Record<string, unknown> } }).error;
}
