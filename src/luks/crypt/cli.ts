import { probeSignature } from '../device/blank.js';
import type { DeviceOps } from '../device/ops.js';
import { luksError } from '../errors.js';
import { exec, type ExecContext } from '../commands/exec.js';
import { readLuksHeader } from '../header/read.js';
import { tablelessDevice } from '../mapping/host.js';
import { describeMapping } from '../mapping/cryptsetup-status.js';
import { dmState } from '../mapping/sysfs-state.js';
import { DEFAULT_PBKDF, type Pbkdf } from '../options.js';
import { providerDefinition } from '../providers/index.js';
import { pbkdfArgs } from '../providers/luks-header.js';
import type { CryptOps } from './crypt-ops.js';
import type { DeviceIdentity } from '../device/identity.js';
import { plainAllocator, type SecureAllocator } from '../../util/secure-memory.js';

/**
 * CryptOps as cryptsetup, dmsetup and blkid command lines through
 * DeviceOps.run: one process per operation, the key on stdin. For a host
 * run without the privileged helper (`luks.helper: off`), and the argv the
 * host tests pin. os-brick's own lines, so volumes stay interchangeable.
 */
export function cliCryptOps(ops: DeviceOps, ctx: ExecContext, allocator: SecureAllocator = plainAllocator()): CryptOps {
  /** luksChangeKey / luksAddKey: both passphrases on one stdin (in locked memory), told apart by --keyfile-size / --new-keyfile-size. */
  async function twoKeys(verb: string, device: DeviceIdentity, version: 1 | 2, first: Buffer, second: Buffer, pbkdf: Pbkdf, what: string): Promise<void> {
    const argv = ['cryptsetup', '--batch-mode', verb, '--key-file=-', `--keyfile-size=${first.length}`, `--new-keyfile-size=${second.length}`];
    argv.push(...pbkdfArgs(pbkdf, version === 1 ? 'luks' : 'luks2'), device.path, '-');
    const stdin = allocator.alloc(first.length + second.length);
    try {
      stdin.view().set(first, 0);
      stdin.view().set(second, first.length);
      await exec(ctx, argv, { stdin: stdin.view(), what });
    } finally {
      stdin.wipe();
    }
  }
  let perf: Promise<boolean> | undefined;

  const self: CryptOps = {
    via: 'cryptsetup',
    async open(req) {
      const flags: string[] = [];
      if (req.readOnly) flags.push('--readonly');
      if (req.allowDiscards) flags.push('--allow-discards');
      if (req.noWorkqueue) flags.push('--perf-no_read_workqueue', '--perf-no_write_workqueue');
      const argv = providerDefinition(req.type).openArgv(req.device.path, req.name, flags, { type: req.type, cipher: req.cipher, keySize: req.keySize });
      await exec(ctx, argv, { stdin: req.passphrase, what: `open ${req.device.path} as ${req.type} mapping ${req.name}` });
    },
    async close(name, deferred) {
      const result = await exec(ctx, ['cryptsetup', 'close', ...(deferred ? ['--deferred'] : []), name], { ok: [4], what: `close ${name}` });
      return result.code === 0;
    },
    async resize(name, passphrase) {
      await exec(ctx, ['cryptsetup', 'resize', '--key-file=-', name], { stdin: passphrase, what: `resize ${name}` });
    },
    async format(req) {
      const type = req.version === 'luks1' ? 'luks' : 'luks2';
      const argv = providerDefinition(type).formatArgv?.(req.device.path, { type, cipher: req.cipher, keySize: req.keySize, pbkdf: req.pbkdf, label: req.label }, DEFAULT_PBKDF);
      if (argv === undefined) throw luksError('E_LUKS_INVALID_ARGUMENT', `${type} has no header to format`);
      await exec(ctx, argv, { stdin: req.passphrase, what: `format ${req.device.path} as ${type}` });
      if (req.tokenJson !== undefined) {
        await exec(ctx, ['cryptsetup', 'token', 'import', '--json-file=-', req.device.path], { stdin: Buffer.from(req.tokenJson), what: `record the portcullis token in ${req.device.path}` });
      }
    },
    async erase(device) {
      await exec(ctx, ['cryptsetup', '--batch-mode', 'luksErase', device.path], { what: `erase the keyslots of ${device.path}` });
    },
    async testKey(device, passphrase) {
      const result = await exec(ctx, ['cryptsetup', 'open', '--test-passphrase', '--verbose', '--key-file=-', device.path], { stdin: passphrase, ok: [2], what: `test a key against ${device.path}` });
      if (result.code !== 0) return undefined;
      const unlocked = /Key slot (\d+) unlocked/.exec(result.stdout.toString('utf8') + result.stderr.toString('utf8'));
      return unlocked === null ? -1 : Number(unlocked[1]);
    },
    async changeKey(device, version, old, next, pbkdf) {
      await twoKeys('luksChangeKey', device, version, old, next, pbkdf, `rewrite a keyslot of ${device.path}`);
    },
    async addKey(device, version, existing, next, pbkdf) {
      await twoKeys('luksAddKey', device, version, existing, next, pbkdf, `add a keyslot to ${device.path}`);
      const slot = await self.testKey(device, next);
      if (slot === undefined) throw luksError('E_CRYPTSETUP_FAILED', `the keyslot just added to ${device.path} does not open with its key`);
      return slot;
    },
    async removeKey(device, slot) {
      await exec(ctx, ['cryptsetup', '--batch-mode', 'luksKillSlot', device.path, String(slot)], { what: `destroy keyslot ${slot} of ${device.path}` });
    },
    async setToken(device, tokenJson, tokenId) {
      // cryptsetup names an id it picks only in prose: pick the first free one here and name it.
      const tokens = async () => {
        const header = await readLuksHeader(ops, device.path);
        return header?.dump.version === 2 ? ((header.dump.metadata['tokens'] ?? {}) as Record<string, unknown>) : {};
      };
      let id = tokenId;
      if (id === undefined) {
        const taken = await tokens();
        id = 0;
        while (Object.hasOwn(taken, String(id))) id += 1;
      }
      const argv = ['cryptsetup', 'token', 'import', '--json-file=-', '--token-id', String(id), ...(tokenId === undefined ? [] : ['--token-replace']), device.path];
      await exec(ctx, argv, { stdin: Buffer.from(tokenJson), what: `store a token in the LUKS2 header of ${device.path}` });
      return id;
    },
    header: (device) => readLuksHeader(ops, device.path),
    describe: (name) => describeMapping(ctx, name, async (n) => {
      const state = await dmState(ops, n);
      return state.kind === 'live' ? state.status : undefined;
    }),
    async list() {
      // Not `dmsetup table`: that can print volume keys.
      const ls = await exec(ctx, ['dmsetup', 'ls', '--target', 'crypt'], { what: 'list crypt mappings' });
      return ls.stdout.toString('utf8').split('\n').map((line) => line.split(/\s+/)[0] ?? '').filter((n) => n !== '' && n !== 'No');
    },
    async openCount(name) {
      const info = await exec(ctx, ['dmsetup', 'info', '-c', '--noheadings', '-o', 'open', name], { ok: [1], what: `count the holders of ${name}` });
      const count = Number.parseInt(info.stdout.toString('utf8').trim(), 10);
      return Number.isFinite(count) ? count : 0;
    },
    async cryptTarget() {
      const targets = await exec(ctx, ['dmsetup', 'targets'], { ok: [1], what: 'list device-mapper targets' });
      return /^crypt\s+v?(\S+)/m.exec(targets.stdout.toString('utf8'))?.[1];
    },
    supportsNoWorkqueue() {
      // cryptsetup ≥ 2.3.4 has the flags; the kernel needs dm-crypt ≥ 1.22 (Linux 5.9). Asked once.
      return (perf ??= (async () => {
        const help = await exec(ctx, ['cryptsetup', '--help'], { what: 'list cryptsetup options' });
        if (!help.stdout.toString('utf8').includes('perf-no_read_workqueue')) return false;
        const crypt = /^(\d+)\.(\d+)/.exec((await self.cryptTarget()) ?? '');
        return crypt !== null && (Number(crypt[1]) > 1 || Number(crypt[2]) >= 22);
      })());
    },
    async removeHalfCreated(name) {
      const device = await tablelessDevice(ctx, name);
      if (device === undefined || !device.uuid.startsWith('CRYPT-')) return false;
      await exec(ctx, ['dmsetup', 'remove', name], { what: `remove the half-created mapping ${name}` });
      return true;
    },
    async makeNode(name) {
      await exec(ctx, ['dmsetup', 'mknodes', name], { what: `create /dev/mapper/${name}` });
    },
    probe: (device, purpose) => probeSignature(ctx, device.path, purpose),
    async version() {
      const out = (await exec(ctx, ['cryptsetup', '--version'], { what: 'read the cryptsetup version' })).stdout.toString('utf8');
      return parseVersion(out);
    },
  };
  return self;
}

export function parseVersion(text: string): { version: string; major: number; minor: number; patch: number } {
  const match = /(\d+)\.(\d+)\.(\d+)/.exec(text);
  if (!match) throw luksError('E_CRYPTSETUP_FAILED', `Cannot parse a cryptsetup version in: ${text.trim().slice(0, 100)}`);
  return { version: `${match[1]}.${match[2]}.${match[3]}`, major: Number(match[1]), minor: Number(match[2]), patch: Number(match[3]) };
}
