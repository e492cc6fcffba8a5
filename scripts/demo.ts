/**
 * make demo: portcullis end to end on the embedded local keystore, as the
 * hypervisor agent would use it — attach an encrypted loop-backed disk, put a
 * file system and data on it through the mapping, detach, reattach, verify,
 * and show that the raw device holds only ciphertext.
 *
 * Where this host has no device-mapper, the privileged commands (cryptsetup,
 * losetup, mkfs, mount) run in the project's VM (a Debian kernel under qemu,
 * test/vm) and portcullisd drives dm-crypt there through the VM's command
 * channel; the daemon, the CLI and this script run here.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, openSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { privilegedRunner, serveRunner, type Broker } from '../test/vm/index.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const config = join(root, 'examples', 'local.yaml');
const exampleDir = '/tmp/portcullis-example';
const socket = join(exampleDir, 'portcullis.sock');
const cli = join(root, 'dist', 'src', 'cli', 'main.js');

const bold = (s: string) => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s);
const step = (s: string) => process.stdout.write(`\n${bold(`== ${s}`)}\n`);

/**
 * Runs the CLI without blocking: this process also relays the daemon's
 * privileged commands to the VM, and a synchronous spawn would stall them.
 */
function cliRun(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cli, '--config', config, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

async function portcullis(...args: string[]): Promise<string> {
  process.stdout.write(`$ portcullis ${args.join(' ')}\n`);
  const run = await cliRun(args);
  process.stdout.write(run.stdout);
  if (run.status !== 0) throw new Error(`portcullis ${args.join(' ')} failed (${run.status}): ${run.stderr}`);
  return run.stdout.trim();
}

async function main(): Promise<void> {
  step('Kernel with dm-crypt');
  const runner = await privilegedRunner();
  let broker: Broker | undefined;
  if (runner.mode === 'direct') {
    console.log('this host has device-mapper: running everything here');
  } else {
    console.log(`this host has no device-mapper: dm-crypt runs in the project's VM (${runner.where}); portcullisd runs here and drives it through the VM's command channel`);
  }
  const sh = async (script: string, show = true): Promise<string> => {
    if (show) process.stdout.write(`# ${script}\n`);
    const r = await runner.run(['sh', '-c', script], { timeoutMs: 300_000 });
    if (r.code !== 0) throw new Error(`${script} failed: ${r.stderr.toString()}`);
    const out = r.stdout.toString();
    if (show && out !== '') process.stdout.write(out);
    return out.trim();
  };

  mkdirSync(exampleDir, { recursive: true, mode: 0o700 });
  step(`Starting portcullisd --config examples/local.yaml (socket ${socket}, log ${exampleDir}/portcullisd.log)`);
  const log = openSync(join(exampleDir, 'portcullisd.log'), 'a', 0o600);
  let daemonArgs = [join(root, 'dist', 'src', 'daemon', 'portcullisd.js'), '--config', config];
  const env: NodeJS.ProcessEnv = { ...process.env };
  if (runner.mode !== 'direct') {
    broker = await serveRunner(runner, join(exampleDir, 'vm-broker.sock'));
    // The test harness's daemon entry: production daemon, privileged commands sent to the VM.
    daemonArgs = [join(root, 'dist', 'test', 'fixtures', 'daemon-main.js'), '--config', config];
    env['PORTCULLIS_VM_SOCKET'] = broker.socketPath;
  }
  const daemon = spawn(process.execPath, daemonArgs, { env, stdio: ['ignore', log, log] });
  const exited = new Promise<number | null>((resolve) => daemon.once('exit', resolve));
  let dev = '';
  try {
    for (let i = 0; i < 1200 && !existsSync(socket); i++) await new Promise((r) => setTimeout(r, 100));
    for (let i = 0; i < 600; i++) {
      if ((await cliRun(['health'])).status !== 4) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    await portcullis('health');

    step('A key for the volume, in the local keystore (sealed under the KEK)');
    const key = await portcullis('key', 'create', '--project', 'demo-project', '--name', 'demo-volume', '--length', '512');

    step('A blank 64 MiB disk (loop device over a file)');
    const file = await sh(`mktemp ${runner.scratchDir}/demo-disk.XXXXXX`, false);
    dev = await sh(`truncate -s 64M ${file} && losetup --find --show ${file}`);

    step('Attach as the hypervisor agent would: PUT /v1/volumes/demo-volume (formats the blank disk as LUKS2)');
    await portcullis('attach', 'demo-volume', '--device', dev, '--key-id', key, '--project', 'demo-project', '--provider', 'luks2', '--format', 'if-blank');

    step('A file system and data, written through /dev/mapper/demo-volume');
    await sh('mkfs.ext4 -q /dev/mapper/demo-volume && mkdir -p /mnt/demo && mount /dev/mapper/demo-volume /mnt/demo');
    await sh('for i in $(seq 1 2000); do echo "portcullis demo line $i: the quick brown fox"; done > /mnt/demo/secret.txt && sha256sum /mnt/demo/secret.txt && umount /mnt/demo');
    const before = await sh('mount /dev/mapper/demo-volume /mnt/demo && sha256sum < /mnt/demo/secret.txt && umount /mnt/demo', false);

    step('What the daemon reports');
    await portcullis('status');
    await portcullis('volumes');

    step('Detach, then attach again (the key now comes from the cache)');
    await portcullis('detach', 'demo-volume');
    await portcullis('attach', 'demo-volume', '--device', dev, '--key-id', key, '--project', 'demo-project', '--provider', 'luks2');
    const after = await sh('mount /dev/mapper/demo-volume /mnt/demo && sha256sum < /mnt/demo/secret.txt && umount /mnt/demo', false);
    console.log(after === before ? `data verified after reattach: sha256 ${after.split(' ')[0] ?? ''}` : 'DATA MISMATCH after reattach');
    if (after !== before) throw new Error('data changed across detach/reattach');
    await portcullis('detach', 'demo-volume');

    step(`The raw device ${dev} holds only ciphertext`);
    const hits = await sh(`grep -c "quick brown fox" ${dev} || true`, false);
    console.log(`plaintext occurrences on ${dev}: ${hits}`);
    await sh(`cryptsetup luksDump ${dev} | grep -E '^(Version|Cipher|	cipher|Keyslots|  0: )' | head -5; dd if=${dev} bs=512 skip=32768 count=1 status=none | od -An -tx1 | head -3`);
    if (hits !== '0') throw new Error('plaintext found on the raw device');
    step('Done: portcullisd stops; the keystore and KEK stay in /tmp/portcullis-example');
  } finally {
    daemon.kill('SIGTERM');
    await exited;
    if (dev !== '') await runner.run(['losetup', '-d', dev]).catch(() => undefined);
    await broker?.close();
    await runner.stop();
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(`demo failed: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  },
);
