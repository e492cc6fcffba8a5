/**
 * The key-derivation function a LUKS header's first keyslot really has, read
 * from `cryptsetup luksDump` output, so the attach bench's table states each
 * side's PBKDF as measured in that run instead of as someone remembered it.
 * The PBKDF decides most of an open's time: os-brick leaves cryptsetup's
 * default (benchmarked to ~2 s of unlock on the formatting machine), the daemon
 * forces a cheap one because its keys are random, not passwords.
 */

export interface KeyslotKdf {
  /** "pbkdf2-sha256, 1000 iterations" or "argon2id, time cost 4, 1048576 KiB, 4 threads". */
  pbkdf: string;
  /** Volume key size in bits (LUKS1 "MK bits", LUKS2 "Key"). */
  keyBits: number;
}

const field = (dump: string, name: string): string | undefined => new RegExp(`^\\s*${name}:\\s*(.+?)\\s*$`, 'm').exec(dump)?.[1];

/**
 * The first enabled keyslot's KDF.
 * @throws Error when the dump is neither a LUKS1 nor a LUKS2 one with a keyslot
 */
export function keyslotKdf(dump: string): KeyslotKdf {
  const version = field(dump, 'Version');
  if (version === '1') {
    // LUKS1 knows only PBKDF2; its hash is the header's.
    const slot = /^Key Slot \d+: ENABLED\s*\n\s*Iterations:\s*(\d+)/m.exec(dump);
    const hash = field(dump, 'Hash spec');
    const bits = field(dump, 'MK bits');
    if (slot?.[1] === undefined || hash === undefined || bits === undefined) throw new Error('luksDump of a LUKS1 header shows no enabled keyslot');
    return { pbkdf: `pbkdf2-${hash}, ${Number(slot[1]).toLocaleString('en-US')} iterations`, keyBits: Number(bits) };
  }
  if (version === '2') {
    const keyslots = dump.slice(dump.indexOf('Keyslots:'), dump.indexOf('Tokens:'));
    const kdf = field(keyslots, 'PBKDF');
    const bits = /^\s*Key:\s*(\d+) bits/m.exec(keyslots)?.[1];
    if (kdf === undefined || bits === undefined) throw new Error('luksDump of a LUKS2 header shows no keyslot');
    if (kdf === 'pbkdf2') {
      return { pbkdf: `pbkdf2-${field(keyslots, 'Hash') ?? '?'}, ${Number(field(keyslots, 'Iterations')).toLocaleString('en-US')} iterations`, keyBits: Number(bits) };
    }
    const memory = Number(field(keyslots, 'Memory'));
    return { pbkdf: `${kdf}, time cost ${field(keyslots, 'Time cost') ?? '?'}, ${memory.toLocaleString('en-US')} KiB, ${field(keyslots, 'Threads') ?? '?'} threads`, keyBits: Number(bits) };
  }
  throw new Error(`luksDump shows header version ${version ?? '(none)'}, not 1 or 2`);
}
