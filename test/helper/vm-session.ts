/**
 * What helper.vm.test.ts shares: a kernel with dm-crypt (privilegedRunner:
 * the test VM, or this host in direct mode), loop devices over scratch files,
 * and `call`, which runs portcullis-helper --stdio beside that kernel with a
 * batch of requests on stdin. The guest sees this host's / read-only over 9p,
 * so the binary built in this worktree runs there at the same path.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { privilegedRunner, type PrivilegedRunner } from '../vm/index.js';
import { Tag, decodeAll, encodeRequest, message, type Fields, type Response } from './codec.js';
import { HELPER_BINARIES } from './process.js';

export interface Request {
  op: number;
  fields?: Fields;
  id?: number;
}

export interface Batch {
  /** Responses by id. */
  byId: Map<number, Response>;
  /** Responses in the order the helper wrote them. */
  order: Response[];
  stderr: string;
}

export class HelperSession {
  private constructor(
    readonly runner: PrivilegedRunner,
    readonly scratch: string,
    /** The test's keys: never in the helper's stderr (raw or hex) nor in a MESSAGE. */
    private readonly keys: Buffer[],
  ) {}

  private loops: string[] = [];

  static async start(): Promise<HelperSession> {
    const runner = await privilegedRunner();
    const r = await runner.run(['mktemp', '-d', `${runner.scratchDir}/helper.XXXXXX`]);
    assert.equal(r.code, 0, r.stderr.toString());
    return new HelperSession(runner, r.stdout.toString().trim(), []);
  }

  /** Registers a key whose bytes must not reach stderr. */
  secret(key: Buffer): Buffer {
    this.keys.push(key);
    return key;
  }

  async sh(script: string, stdin?: Buffer): Promise<string> {
    const r = await this.runner.run(['sh', '-c', script], { ...(stdin === undefined ? {} : { stdin }), timeoutMs: 120_000 });
    assert.equal(r.code, 0, `sh -c '${script}': ${r.stderr.toString()}`);
    return r.stdout.toString().trim();
  }

  async loopDevice(mib = 24): Promise<{ path: string; rdev: string; file: string }> {
    const file = `${this.scratch}/disk-${this.loops.length}-${randomBytes(4).toString('hex')}.img`;
    const path = await this.sh(`truncate -s ${mib}M ${file} && losetup --find --show ${file}`);
    this.loops.push(path);
    return { path, rdev: await this.rdev(path), file };
  }

  /** major:minor in decimal, as RDEV wants it. */
  rdev(path: string): Promise<string> {
    return this.sh(`stat -L -c '%Hr:%Lr' ${path}`);
  }

  /** One helper run: every request written at once, stdin closed, every response read. */
  async call(requests: Request[], args: string[] = []): Promise<Batch> {
    let next = 1;
    const frames = requests.map((q) => encodeRequest(q.op, q.id ?? next++, q.fields ?? []));
    const r = await this.runner.run([HELPER_BINARIES.plain, '--stdio', ...args], { stdin: Buffer.concat(frames), timeoutMs: 180_000 });
    const stderr = r.stderr.toString('utf8');
    for (const k of this.keys) assert.ok(!stderr.includes(k.toString('hex')) && !r.stderr.includes(k), 'a key reached the helper stderr');
    assert.equal(r.code, 0, `helper exit ${r.code} ${r.signal ?? ''}: ${stderr}`);
    const order = decodeAll(r.stdout);
    assert.equal(order.length, requests.length, `one response per request; stderr: ${stderr}`);
    for (const resp of order) for (const k of this.keys) assert.ok(!resp.fields.get(Tag.MESSAGE)?.includes(k), 'a key in MESSAGE');
    return { byId: new Map(order.map((x) => [x.id, x])), order, stderr };
  }

  /** One request, its response; asserts the status (showing MESSAGE when it differs). */
  async one(op: number, fields: Fields, status: number, args: string[] = []): Promise<Response> {
    const { order } = await this.call([{ op, fields }], args);
    const resp = order[0] as Response;
    assert.equal(resp.status, status, `op ${op}: status ${resp.status}, MESSAGE ${message(resp) ?? '(none)'}`);
    return resp;
  }

  async cleanup(): Promise<void> {
    await this.runner.run(['sh', '-c', 'for m in $(dmsetup ls --target crypt | cut -f1); do case $m in ptc-*) dmsetup remove --force $m;; esac; done; dmsetup remove ptc-hang 2>/dev/null; true']).catch(() => undefined);
    for (const dev of this.loops) await this.runner.run(['losetup', '-d', dev]).catch(() => undefined);
    await this.runner.run(['rm', '-rf', this.scratch]).catch(() => undefined);
    await this.runner.stop();
  }
}
