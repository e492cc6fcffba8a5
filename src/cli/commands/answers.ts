import type { AttachAnswer, DetachAnswer, RekeyAnswer, VolumeAnswer } from '../../api/wire.js';
import type { OptionValues } from '../command.js';
import { bytes, dash, yesNo } from '../format.js';
import { printFields, printJson, printTable } from '../output.js';

/** How the daemon's answers look to people; with --json they are printed as the daemon sent them. */

export function printAttach(values: OptionValues, a: AttachAnswer): void {
  if (values['json'] === true) {
    printJson(a);
    return;
  }
  const t = a.timings_ms;
  printFields([
    ['name', a.name],
    ['mapper_path', a.mapper_path],
    ['device', a.device],
    ['provider', a.provider],
    ['luks_uuid', dash(a.luks_uuid)],
    ['size', a.size_bytes === null ? '-' : `${bytes(a.size_bytes)} (${a.size_bytes} bytes)`],
    ['key_id', dash(a.key_id)],
    ...(a.key_scope === undefined ? [] : [['key_scope', a.key_scope] as [string, string]]),
    ['key_source', dash(a.key_source)],
    ['opened', a.opened ? `yes${a.formatted ? ' (formatted first: the device was blank)' : ''}${a.keyslot_upgraded ? ' (keyslot rewritten to the fast PBKDF)' : ''}` : 'no (already attached to this device)'],
    ['timings', t === undefined ? '-' : `key ${t.key} ms, format ${t.format} ms, open ${t.open} ms, total ${t.total} ms`],
  ]);
}

export function printDetach(values: OptionValues, d: DetachAnswer): void {
  if (values['json'] === true) {
    printJson(d);
    return;
  }
  const what = d.deferred
    ? `${d.name}: deferred; the kernel removes the mapping when its last holder lets go`
    : d.closed
      ? `${d.name}: closed`
      : `${d.name}: was not attached; nothing to close`;
  const erase = d.erased === true ? `; ${erasedWhat(d)}: the data cannot be read again` : '';
  process.stdout.write(`${what}${erase} (${d.timings_ms?.total ?? '-'} ms)\n`);
}

/** What an erase did: keyslots wiped (a daemon before keyslots_wiped always wiped them when it erased), key deleted. */
function erasedWhat(d: DetachAnswer): string {
  const wiped = d.keyslots_wiped !== false;
  if (!wiped) return 'disk not found on this host; its key, created for it, deleted';
  return `keyslots erased${d.key_deleted === true ? ' and key deleted' : ' (the project key is kept)'}`;
}

export function printVolume(values: OptionValues, v: VolumeAnswer): void {
  if (values['json'] === true) {
    printJson(v);
    return;
  }
  printFields([
    ['name', v.name],
    ['mapper_path', v.mapper_path],
    ['device', dash(v.device)],
    ['type', dash(v.type)],
    ['cipher', v.cipher === null ? '-' : `${v.cipher}${v.key_size_bits === null ? '' : ` (${v.key_size_bits} bit key)`}`],
    ['size', v.size_bytes === null ? '-' : `${bytes(v.size_bytes)} (${v.size_bytes} bytes)`],
    ['read_only', yesNo(v.read_only)],
    ['in_use', yesNo(v.in_use)],
    ['origin', originText(v.origin)],
    ['project_id', dash(v.project_id)],
    ['key_id', dash(v.key_id)],
    ...(v.keyslots === undefined ? [] : [['keyslots', keyslotsText(v)] as [string, string]]),
  ]);
}

/** One line per keyslot: which key opens it, and where that fact is kept (header token or daemon record). */
function keyslotsText(v: VolumeAnswer): string {
  if (v.keyslots == null || v.keyslots.length === 0) return '- (no portcullis token in the header and no record)';
  const from = v.keyslots_from === 'token' ? 'LUKS2 token' : "daemon's record";
  return v.keyslots.map((k) => `${k.slot === null ? 'slot ?' : `slot ${k.slot}`}: key ${k.key_id} (${k.backend}, project ${k.project_id}) [${from}]`).join('\n            ');
}

export function printRekey(values: OptionValues, r: RekeyAnswer): void {
  if (values['json'] === true) {
    printJson(r);
    return;
  }
  printFields([
    ['name', r.name],
    ['device', r.device],
    ['luks', `LUKS${r.luks_version}, ${r.online ? 'online (the mapping stayed open)' : 'offline'}`],
    ['key_id', r.key_id],
    ['keyslots', r.changed ? `new key in slot ${r.slot}${r.removed_slot === null ? '' : `, old key's slot ${r.removed_slot} destroyed`}` : `unchanged: the new key already opens slot ${r.slot}, the old key none`],
    ['recorded_in', r.recorded_in.length === 0 ? "nothing (LUKS1 has no token and no mapping holds a record): keep the new key id with the volume" : r.recorded_in.join(', ')],
    ['timings', `keys ${r.timings_ms.keys} ms, total ${r.timings_ms.total} ms`],
  ]);
}

export function printVolumes(values: OptionValues, volumes: VolumeAnswer[]): void {
  if (values['json'] === true) {
    printJson(volumes);
    return;
  }
  if (volumes.length === 0) {
    process.stdout.write('no crypt mappings\n');
    return;
  }
  printTable(
    ['NAME', 'DEVICE', 'TYPE', 'SIZE', 'RO', 'IN USE', 'ORIGIN', 'PROJECT', 'KEY'],
    volumes.map((v) => [v.name, dash(v.device), dash(v.type), bytes(v.size_bytes), yesNo(v.read_only), yesNo(v.in_use), v.origin, dash(v.project_id), dash(v.key_id)]),
  );
}

function originText(origin: VolumeAnswer['origin']): string {
  if (origin === 'attached') return 'attached (through this daemon)';
  if (origin === 'adopted') return 'adopted (found in the kernel when the daemon started)';
  return `${origin} (made by something else since the daemon started)`;
}
