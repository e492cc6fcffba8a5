/**
 * The named fake host of the service tests (test/luks/fake-host.ts) with a
 * cryptsetup that keeps state as the kernel and libcryptsetup would:
 * luksFormat writes a header with a fresh UUID and keyslot 0, token import
 * stores tokens by id (replacing one only with --token-replace), luksAddKey
 * adds a slot only for a passphrase that opens one, --test-passphrase names
 * the slot a passphrase opens, luksKillSlot destroys one, luksOpen and
 * create map (luksOpen only with a passphrase some slot has), close unmaps,
 * luksErase wipes every keyslot. A fault a real part cannot be made to
 * produce on demand (a kill between two writes) is the kill-point VM test's.
 */
import { randomUUID } from 'node:crypto';
import { fakeHost, luks1Head, luks2Head, type Call, type FakeHost } from '../../luks/fake-host.js';

interface Disk {
  version: 'luks1' | 'luks2';
  /** keyslot → passphrase (os-brick's hex of the key). */
  slots: Map<number, string>;
  tokens: Record<string, unknown>;
}

export interface DiskHost extends FakeHost {
  /** Keyslot → passphrase per formatted device. */
  disks: Map<string, Disk>;
  /** Rewrites a device's header bytes from `disks` (after a test set a state by hand: a rekey cut short). */
  rebuild(path: string): void;
}

/** `secrets`: the passphrase of each device's lowest keyslot, kept in step (absent once erased). */
export function diskHost(devices: Record<string, { rdev: string; head?: Buffer }>, secrets: Map<string, string>): DiskHost {
  const disks = new Map<string, Disk>();
  const rebuild = (path: string): void => {
    const device = h.devices[path];
    const disk = disks.get(path);
    if (device === undefined || disk === undefined) return;
    const uuid = (device.head?.subarray(168, 204).toString('latin1') ?? '').replace(/\0.*$/, '') || randomUUID();
    const slots = [...disk.slots.keys()].sort((a, b) => a - b);
    if (disk.version === 'luks1') {
      const head = luks1Head(uuid);
      head.writeUInt32BE(0, 208); // luks1Head enables slot 0: set the real ones
      for (const s of slots) {
        head.writeUInt32BE(0x00ac71f3, 208 + 48 * s);
        head.writeUInt32BE(1000, 212 + 48 * s);
      }
      device.head = head;
    } else {
      const keyslots = Object.fromEntries(slots.map((s) => [String(s), { kdf: { type: 'pbkdf2', iterations: 1000 } }]));
      device.head = luks2Head(uuid, keyslots, { segments: { '0': { offset: '16777216' } }, tokens: disk.tokens });
    }
    const first = slots[0];
    if (first === undefined) secrets.delete(path);
    else secrets.set(path, disk.slots.get(first) ?? '');
  };
  const opens = (path: string, pass: string | undefined): number | undefined => {
    for (const [slot, p] of disks.get(path)?.slots ?? []) if (p === pass) return slot;
    return undefined;
  };
  const option = (call: Call, name: string): string | undefined => call.argv.find((a) => a.startsWith(`${name}=`))?.slice(name.length + 1);
  const h = fakeHost(
    [
      ['blkid -p', { code: 2 }],
      ['cryptsetup --help', { stdout: '' }],
      ['cryptsetup --batch-mode luksFormat', (call) => {
        const path = call.argv.at(-1) ?? '';
        const device = h.devices[path];
        if (device !== undefined) device.head = undefined;
        disks.set(path, { version: call.argv.includes('luks1') ? 'luks1' : 'luks2', slots: new Map([[0, call.stdin?.toString() ?? '']]), tokens: {} });
        rebuild(path);
        return {};
      }],
      ['cryptsetup token import', (call) => {
        const path = call.argv.at(-1) ?? '';
        const disk = disks.get(path);
        if (disk === undefined) return { code: 1, stderr: 'Device is not a valid LUKS device.' };
        const at = call.argv.indexOf('--token-id');
        let id = at === -1 ? undefined : call.argv[at + 1];
        if (id === undefined) for (let n = 0; id === undefined; n++) if (disk.tokens[String(n)] === undefined) id = String(n);
        if (disk.tokens[id] !== undefined && !call.argv.includes('--token-replace')) return { code: 1, stderr: `Token ${id} is in use.` };
        disk.tokens[id] = JSON.parse(call.stdin?.toString() ?? '{}');
        rebuild(path);
        return {};
      }],
      ['cryptsetup open --test-passphrase', (call) => {
        const slot = opens(call.argv.at(-1) ?? '', call.stdin?.toString());
        return slot === undefined ? { code: 2, stderr: 'No key available with this passphrase.' } : { stdout: `Key slot ${slot} unlocked.\nCommand successful.\n` };
      }],
      ['cryptsetup --batch-mode luksAddKey', (call) => {
        const path = call.argv.at(-2) ?? '';
        const stdin = call.stdin?.toString() ?? '';
        const oldLength = Number(option(call, '--keyfile-size'));
        if (opens(path, stdin.slice(0, oldLength)) === undefined) return { code: 2, stderr: 'No key available with this passphrase.' };
        const disk = disks.get(path);
        let slot = 0;
        while (disk?.slots.has(slot) === true) slot += 1;
        disk?.slots.set(slot, stdin.slice(oldLength));
        rebuild(path);
        return {};
      }],
      ['cryptsetup --batch-mode luksKillSlot', (call) => {
        const path = call.argv.at(-2) ?? '';
        if (disks.get(path)?.slots.delete(Number(call.argv.at(-1))) !== true) return { code: 1, stderr: 'Keyslot is not active.' };
        rebuild(path);
        return {};
      }],
      ['cryptsetup luksOpen', (call) => {
        const path = call.argv.at(-2) ?? '';
        if (opens(path, call.stdin?.toString()) === undefined) return { code: 2, stderr: 'No key available with this passphrase.' };
        return mapped(call.argv.at(-1) ?? '', path);
      }],
      ['cryptsetup status', (call) => {
        const m = h.mappings[call.argv.at(-1) ?? ''];
        if (m === undefined) return { code: 4 };
        return { stdout: `/dev/mapper/${call.argv.at(-1)} is active.\n  type:    ${/^CRYPT-([A-Z0-9]+)-/.exec(m.uuid)?.[1] ?? 'n/a'}\n  device:  /dev/${m.slave}\n` };
      }],
      ['cryptsetup create', (call) => mapped(call.argv.at(-2) ?? '', call.argv.at(-1) ?? '')],
      ['cryptsetup close', (call) => {
        const name = call.argv.at(-1) ?? '';
        if (h.mappings[name] === undefined) return { code: 4 };
        delete h.mappings[name];
        return {};
      }],
      ['cryptsetup --batch-mode luksErase', (call) => {
        const path = call.argv.at(-1) ?? '';
        disks.get(path)?.slots.clear();
        rebuild(path);
        return {};
      }],
    ],
    { devices },
  );
  const mapped = (name: string, path: string): Record<string, never> => {
    const version = disks.get(path)?.version === 'luks1' ? 'LUKS1' : 'LUKS2';
    h.mappings[name] = { uuid: `CRYPT-${version}-x-${name}`, slave: path.replace('/dev/', ''), slaveRdev: h.devices[path]?.rdev ?? '' };
    return {};
  };
  return Object.assign(h, { disks, rebuild });
}
