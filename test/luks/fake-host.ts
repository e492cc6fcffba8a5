/**
 * A fake host for the driver's argv tests, named as such: scripted command
 * answers (os-brick tests its encryptors through an injected executor the
 * same way) and an in-memory /dev and /sys. It pins argv, call counts and
 * error mapping; real devices and a real kernel are in the *.vm tests.
 */
import type { DeviceOps, DeviceStat } from '../../src/luks/device/ops.js';
import type { RunOptions, RunResult } from '../../src/luks/commands/runner.js';

export interface Call {
  argv: string[];
  stdin: Buffer | undefined;
}

export type Answer = Partial<Omit<RunResult, 'stdout' | 'stderr'>> & { stdout?: string; stderr?: string };
export type Rule = [string, Answer | ((call: Call) => Answer)];

export interface FakeDevice {
  rdev: string;
  /** The device's first bytes; the rest reads as zeros up to `size`. */
  head?: Buffer;
  size?: number;
  /** errno a read fails with (EIO). */
  readError?: string;
}

/** A live dm mapping as sysfs shows it. */
export interface FakeMapping {
  uuid: string;
  /** Kernel name of the backing device (loop0, vdb, dm-3) and its major:minor. */
  slave: string;
  slaveRdev: string;
  sectors?: number;
}

export interface FakeHost extends DeviceOps {
  calls: Call[];
  /** Device operations asked, by name, for counting. */
  opsAsked: string[];
  devices: Record<string, FakeDevice>;
  links: Record<string, string>;
  mappings: Record<string, FakeMapping>;
}

const errno = (code: string) => Object.assign(new Error(code), { code });

/** Answers commands by the first rule whose prefix matches argv (joined by spaces); default exit 0. */
export function fakeHost(rules: Rule[], setup: { devices?: Record<string, FakeDevice>; links?: Record<string, string>; mappings?: Record<string, FakeMapping> } = {}): FakeHost {
  const host: FakeHost = {
    calls: [],
    opsAsked: [],
    devices: { '/dev/vdb': { rdev: '253:16' }, ...setup.devices },
    links: { ...setup.links },
    mappings: { ...setup.mappings },
    async run(argv: readonly string[], options: RunOptions = {}) {
      const call = { argv: [...argv], stdin: options.stdin === undefined ? undefined : Buffer.from(options.stdin) };
      host.calls.push(call);
      const line = argv.join(' ');
      const rule = rules.find(([prefix]) => line.startsWith(prefix));
      const answer = rule === undefined ? {} : typeof rule[1] === 'function' ? rule[1](call) : rule[1];
      return { code: answer.code ?? 0, stdout: Buffer.from(answer.stdout ?? ''), stderr: Buffer.from(answer.stderr ?? ''), ...(answer.timedOut ? { timedOut: true } : {}) };
    },
    async stat(path): Promise<DeviceStat | undefined> {
      host.opsAsked.push('stat');
      const real = host.links[path] ?? path;
      const mapping = real.startsWith('/dev/mapper/') ? mappingIndex(real.slice('/dev/mapper/'.length)) : -1;
      if (mapping !== -1) return { path: real, block: true, rdev: `254:${mapping}`, symlink: real !== path };
      const device = host.devices[real];
      return device === undefined ? undefined : { path: real, block: true, rdev: device.rdev, symlink: real !== path };
    },
    async read(path, offset, length) {
      host.opsAsked.push('read');
      const device = host.devices[host.links[path] ?? path];
      if (device === undefined) throw errno('ENOENT');
      if (device.readError !== undefined) throw errno(device.readError);
      const size = device.size ?? 64 * 1024 * 1024;
      const out = Buffer.alloc(Math.max(0, Math.min(length, size - offset)));
      device.head?.copy(out, 0, offset, Math.min(device.head.length, offset + out.length));
      return out;
    },
    async scanZeros(path, length) {
      host.opsAsked.push('scanZeros');
      const device = host.devices[host.links[path] ?? path];
      if (device === undefined) throw errno('ENOENT');
      if (device.readError !== undefined) throw errno(device.readError);
      const scanned = Math.min(length, device.size ?? 64 * 1024 * 1024);
      const at = device.head?.subarray(0, scanned).findIndex((byte) => byte !== 0) ?? -1;
      return { scanned, firstNonZero: at === -1 ? undefined : at };
    },
    async readFiles(paths) {
      host.opsAsked.push('readFiles');
      return paths.map((p) => sysfs(p));
    },
    async list(dir) {
      host.opsAsked.push('list');
      if (dir === '/sys/block') return Object.keys(host.mappings).map((_, i) => `dm-${i}`);
      if (dir === '/sys/class/block') return Object.keys(host.devices).map((d) => d.replace('/dev/', ''));
      const holders = /^\/sys\/dev\/block\/(\d+:\d+)\/holders$/.exec(dir);
      if (holders !== null) return Object.values(host.mappings).flatMap((m, i) => (m.slaveRdev === holders[1] ? [`dm-${i}`] : []));
      const slaves = /^\/sys\/block\/dm-(\d+)\/slaves$/.exec(dir);
      const m = slaves === null ? undefined : Object.values(host.mappings)[Number(slaves[1])];
      return m === undefined ? undefined : [m.slave];
    },
    async replaceSymlink(link, target) {
      host.opsAsked.push('replaceSymlink');
      if (host.links[link] === undefined) return 'the device path is not a symlink';
      host.links[link] = target;
      return undefined;
    },
  };
  const mappingIndex = (name: string) => Object.keys(host.mappings).indexOf(name);
  function sysfs(path: string): string | undefined {
    // A mapping's node is 254:N (stat above): /sys/dev/block/254:N is its dm-N.
    const classSize = /^\/sys\/class\/block\/([^/]+)\/size$/.exec(path);
    if (classSize !== null) {
      const device = host.devices[`/dev/${classSize[1]}`];
      return device === undefined ? undefined : String(Math.floor((device.size ?? 64 * 1024 * 1024) / 512));
    }
    const byDev = /^\/sys\/dev\/block\/254:(\d+)\/(dm\/.+)$/.exec(path);
    if (byDev !== null) return sysfs(`/sys/block/dm-${byDev[1]}/${byDev[2]}`);
    const match = /^\/sys\/block\/dm-(\d+)\/(.+)$/.exec(path);
    if (match === null) return undefined;
    const name = Object.keys(host.mappings)[Number(match[1])];
    const m = name === undefined ? undefined : host.mappings[name];
    if (name === undefined || m === undefined) return undefined;
    const attrs: Record<string, string> = { 'dm/name': name, 'dm/uuid': m.uuid, 'dm/suspended': '0', size: String(m.sectors ?? 8192), ro: '0', [`slaves/${m.slave}/dev`]: m.slaveRdev };
    return attrs[match[2] ?? ''];
  }
  return host;
}

/** A minimal LUKS1 header: magic, version, UUID at 168, keyslot 0 enabled with `iterations`. */
export function luks1Head(uuid: string, iterations = 1000): Buffer {
  const head = Buffer.alloc(4096);
  Buffer.from([0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe]).copy(head, 0);
  head.writeUInt16BE(1, 6);
  head.write(uuid, 168, 'latin1');
  head.writeUInt32BE(0x00ac71f3, 208);
  head.writeUInt32BE(iterations, 212);
  return head;
}

/** A minimal LUKS2 header: magic, version, 16 KiB header size, UUID at 168, JSON metadata (keyslots, and `more`: tokens, segments) at 4096. */
export function luks2Head(uuid: string, keyslots: Record<string, unknown> = { '0': { kdf: { type: 'pbkdf2', iterations: 1000 } } }, more: Record<string, unknown> = {}): Buffer {
  const head = Buffer.alloc(16384);
  Buffer.from([0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe]).copy(head, 0);
  head.writeUInt16BE(2, 6);
  head.writeBigUInt64BE(16384n, 8);
  head.write(uuid, 168, 'latin1');
  head.write(JSON.stringify({ keyslots, ...more }), 4096, 'utf8');
  return head;
}
