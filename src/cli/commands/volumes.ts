import { attachBodySchema, rekeyBodySchema, resizeBodySchema, type AttachAnswer, type DetachAnswer, type RekeyAnswer, type VolumeAnswer } from '../../api/wire.js';
import { exitCodes, stringOption, type Command, type CommandInput } from '../command.js';
import { connectDaemon } from '../daemon-session.js';
import { printAttach, printDetach, printRekey, printVolume, printVolumes } from './answers.js';
import { authFromEnv, checkedBody, daemonOptions, mappingFields, projectOf, required, volumeName } from './daemon-options.js';

/** Volume commands: what the hypervisor agent does over the socket, for operators and for testing without one. */

// Names are checked against the API's pattern (safe URL path characters) before use.
const path = (name: string) => `/v1/volumes/${volumeName(name)}`;

const list: Command = {
  path: ['volumes'],
  summary: 'list the crypt mappings as the kernel reports them',
  usage: '[--json]',
  options: {},
  async run({ values }: CommandInput) {
    const answer = await connectDaemon(values).request<{ volumes: VolumeAnswer[] }>('GET', '/v1/volumes');
    printVolumes(values, answer.volumes ?? []);
    return exitCodes.ok;
  },
};

const show: Command = {
  path: ['volume'],
  summary: 'show one crypt mapping and which key opens each keyslot (E_VOLUME_NOT_FOUND when there is none)',
  usage: 'NAME [--json]',
  positionals: 1,
  options: {},
  async run({ values, positionals }: CommandInput) {
    const target = path(positionals[0] as string);
    printVolume(values, await connectDaemon(values).request<VolumeAnswer>('GET', target));
    return exitCodes.ok;
  },
};

const attach: Command = {
  path: ['attach'],
  summary: 'open DEV as /dev/mapper/NAME with its key from the key manager (idempotent)',
  usage:
    'NAME --device DEV --key-id ID --project P [--provider luks|luks2|plain|CLASS] [--format never|if-blank] [--cipher C] [--key-size BITS] [--read-only] [--allow-discards] [--symlink] [--json]',
  positionals: 1,
  notes: [
    'A Keystone token to fetch the key with is read from $OS_AUTH_TOKEN, never from a flag:',
    "other users can read a command line in /proc. --format if-blank formats only a provably",
    'blank device (E_DEVICE_NOT_BLANK otherwise); the default, never, only opens.',
  ].join('\n'),
  options: {
    device: daemonOptions.device,
    'key-id': daemonOptions['key-id'],
    project: daemonOptions.project,
    provider: daemonOptions.provider,
    format: { type: 'string', help: 'never (default): open only; if-blank: format first when the device is provably blank', valueName: 'MODE' },
    cipher: daemonOptions.cipher,
    'key-size': daemonOptions['key-size'],
    'read-only': daemonOptions['read-only'],
    'allow-discards': daemonOptions['allow-discards'],
    symlink: { type: 'boolean', help: 'as os-brick: point the --device symlink at the mapping after opening' },
  },
  async run({ values, positionals }: CommandInput) {
    const target = path(positionals[0] as string);
    const format = stringOption(values, 'format');
    const body = checkedBody(attachBodySchema, {
      device: required(values, 'device', 'DEV'),
      key: { id: required(values, 'key-id', 'ID') },
      project_id: projectOf(values),
      ...mappingFields(values),
      ...(format === undefined ? {} : { format }),
      ...(values['symlink'] === true ? { symlink: true } : {}),
      ...authFromEnv(),
    });
    printAttach(values, await connectDaemon(values).request<AttachAnswer>('PUT', target, body));
    return exitCodes.ok;
  },
};

const detach: Command = {
  path: ['detach'],
  summary: 'close /dev/mapper/NAME (idempotent; E_VOLUME_BUSY while held open)',
  usage: 'NAME [--deferred] [--json]',
  positionals: 1,
  options: {
    deferred: { type: 'boolean', help: 'if the mapping is held open, have the kernel remove it when the last holder lets go' },
  },
  async run({ values, positionals }: CommandInput) {
    const target = `${path(positionals[0] as string)}${values['deferred'] === true ? '?deferred=true' : ''}`;
    printDetach(values, await connectDaemon(values).request<DetachAnswer>('DELETE', target));
    return exitCodes.ok;
  },
};

const resize: Command = {
  path: ['resize'],
  summary: "grow /dev/mapper/NAME to its device's new size",
  usage: 'NAME --key-id ID --project P [--json]',
  positionals: 1,
  notes: 'The daemon needs the volume key to resize; a Keystone token for it is read from $OS_AUTH_TOKEN.',
  options: { 'key-id': daemonOptions['key-id'], project: daemonOptions.project },
  async run({ values, positionals }: CommandInput) {
    const target = `${path(positionals[0] as string)}/resize`;
    const body = checkedBody(resizeBodySchema, { key: { id: required(values, 'key-id', 'ID') }, project_id: projectOf(values), ...authFromEnv() });
    printVolume(values, await connectDaemon(values).request<VolumeAnswer>('POST', target, body));
    return exitCodes.ok;
  },
};

const rekey: Command = {
  path: ['rekey'],
  summary: "replace the keyslot of the volume's current key by one for a new key (online, or offline with --device)",
  usage: 'NAME --key-id OLD --new-key-id NEW --project P [--device DEV] [--json]',
  positionals: 1,
  notes: [
    'An attached volume is rekeyed online: the mapping stays open and only keyslots change.',
    'A detached one needs --device. The volume key (what encrypts the data) does not change:',
    'this changes which key unlocks it, not the data. Steps: add a keyslot for NEW and prove it',
    "opens, record NEW (the LUKS2 header's portcullis token, the daemon's record), destroy OLD's",
    'slot. Interrupted, it leaves a volume that opens with OLD or NEW; run it again to finish.',
    'A Keystone token to fetch both keys with is read from $OS_AUTH_TOKEN.',
  ].join('\n'),
  options: {
    'key-id': { type: 'string', help: 'the key that opens the volume now', valueName: 'OLD' },
    'new-key-id': { type: 'string', help: 'the key to open it with from now on (it must exist in the key manager)', valueName: 'NEW' },
    project: daemonOptions.project,
    device: { type: 'string', help: 'the detached volume\'s block device (a /dev path); not needed while NAME is attached', valueName: 'DEV' },
  },
  async run({ values, positionals }: CommandInput) {
    const target = `${path(positionals[0] as string)}/rekey`;
    const device = stringOption(values, 'device');
    const body = checkedBody(rekeyBodySchema, {
      key: { id: required(values, 'key-id', 'OLD') },
      new_key: { id: required(values, 'new-key-id', 'NEW') },
      project_id: projectOf(values),
      ...(device === undefined ? {} : { device }),
      ...authFromEnv(),
    });
    printRekey(values, await connectDaemon(values).request<RekeyAnswer>('POST', target, body));
    return exitCodes.ok;
  },
};

export const volumeCommands: Command[] = [list, show, attach, detach, resize, rekey];
