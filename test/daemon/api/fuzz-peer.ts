/**
 * Requests from another uid, for the fuzz: a batch of raw requests sent by
 * one child process running as that uid (SO_PEERCRED then names it), each on
 * its own connection, each answer read until the daemon closes (or a bound).
 */
import { spawn } from 'node:child_process';

const CHILD = `
  const net = require('node:net');
  const [socketPath] = process.argv.slice(1);
  let input = '';
  process.stdin.on('data', (c) => (input += c));
  process.stdin.on('end', async () => {
    const out = [];
    for (const line of input.split('\\n').filter(Boolean)) {
      out.push(await new Promise((resolve) => {
        const s = net.connect(socketPath, () => s.write(Buffer.from(line, 'base64')));
        const got = [];
        const timer = setTimeout(() => s.destroy(), 10000);
        s.on('data', (c) => got.push(c));
        s.on('error', () => undefined);
        s.on('close', () => { clearTimeout(timer); resolve(Buffer.concat(got).toString('base64')); });
      }));
    }
    process.stdout.write(out.join('\\n'));
  });`;

/** Sends each request as uid/gid; resolves what came back on each connection before it closed. */
export function sendAs(uid: number, gid: number, socketPath: string, requests: Buffer[]): Promise<Buffer[]> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', CHILD, socketPath], { uid, gid, stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) reject(new Error(`the client as uid ${uid} exited ${code}: ${err}`));
      else resolve(out === '' ? [] : out.split('\n').map((b) => Buffer.from(b, 'base64')));
    });
    child.stdin.end(requests.map((r) => r.toString('base64')).join('\n'));
  });
}
