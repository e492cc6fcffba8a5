/** A crypt mapping as `cryptsetup status` reports it. */
export interface MappingStatus {
  name: string;
  mapperPath: string;
  /** LUKS1, LUKS2, PLAIN, ... as cryptsetup prints it. */
  type?: string;
  cipher?: string;
  keySizeBits?: number;
  /** The backing device. */
  device?: string;
  /** The backing device's major:minor, where the kernel said it (sysfs). */
  deviceRdev?: string;
  /** I/O to the mapping is suspended (dmsetup suspend): anything that reads it hangs. */
  suspended?: boolean;
  /** Backing file, when the device is a loop device. */
  loop?: string;
  offsetSectors?: number;
  sizeSectors?: number;
  readOnly: boolean;
  /** Something holds the mapping open (a mounted file system, a guest). */
  inUse: boolean;
  flags: string[];
}

export function parseStatus(name: string, text: string): MappingStatus {
  const fields = new Map<string, string>();
  for (const line of text.split('\n').slice(1)) {
    const colon = line.indexOf(':');
    if (colon > 0) fields.set(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
  }
  const number = (key: string) => {
    const match = /^(\d+)/.exec(fields.get(key) ?? '');
    return match ? Number(match[1]) : undefined;
  };
  const status: MappingStatus = {
    name,
    mapperPath: `/dev/mapper/${name}`,
    readOnly: /read.?only/i.test(fields.get('mode') ?? ''),
    inUse: /in use/.test(text.split('\n')[0] ?? ''),
    flags: (fields.get('flags') ?? '').split(/\s+/).filter((f) => f !== ''),
  };
  const set = <K extends keyof MappingStatus>(key: K, value: MappingStatus[K] | undefined) => {
    if (value !== undefined) status[key] = value;
  };
  set('type', fields.get('type'));
  set('cipher', fields.get('cipher'));
  set('keySizeBits', number('keysize'));
  set('device', fields.get('device'));
  set('loop', fields.get('loop'));
  set('offsetSectors', number('offset'));
  set('sizeSectors', number('size'));
  return status;
}
