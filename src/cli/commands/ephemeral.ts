import { ephemeralAttachBodySchema, ephemeralDetachBodySchema, type AttachAnswer, type DetachAnswer } from '../../api/wire.js';
import { exitCodes, stringOption, type Command, type CommandInput } from '../command.js';
import { connectDaemon } from '../daemon-session.js';
import { UsageError } from '../output.js';
import { printAttach, printDetach } from './answers.js';
import { authFromEnv, checkedBody, daemonOptions, ephemeralId, mappingFields, projectOf, required } from './daemon-options.js';

/** Ephemeral disks: encrypted scratch disks whose key the daemon finds or creates (docs/api.md "Ephemeral disks"). */

// Ids are checked against the API's pattern (safe URL path characters) before use.
const path = (positionals: string[]) => `/v1/ephemeral/${ephemeralId(positionals[0] as string, 'INSTANCE')}/${ephemeralId(positionals[1] as string, 'DISK')}`;

const attach: Command = {
  path: ['ephemeral', 'attach'],
  summary: 'open an ephemeral disk as /dev/mapper/ephemeral-INSTANCE+DISK, creating its key on first use',
  usage: 'INSTANCE DISK --device DEV --project P [--scope instance|project] [--key-id ID] [--provider NAME] [--cipher C] [--key-size BITS] [--allow-discards] [--json]',
  positionals: 2,
  notes: [
    '--scope instance (default): one key per disk, created on the first attach; project: one key per',
    'project, shared by its instances. The first attach formats the blank disk; later ones open it.',
  ].join('\n'),
  options: {
    device: daemonOptions.device,
    project: daemonOptions.project,
    scope: { type: 'string', help: 'instance (default): a key per disk; project: one key per project', valueName: 'SCOPE' },
    'key-id': { type: 'string', help: 'use this existing key instead of finding or creating one', valueName: 'ID' },
    provider: { ...daemonOptions.provider, help: 'luks2 (the default and the only one: an ephemeral disk\'s LUKS2 header carries the token that proves it before an erase)' },
    cipher: daemonOptions.cipher,
    'key-size': daemonOptions['key-size'],
    'allow-discards': daemonOptions['allow-discards'],
  },
  async run({ values, positionals }: CommandInput) {
    const target = path(positionals);
    const scope = stringOption(values, 'scope');
    const keyId = stringOption(values, 'key-id');
    const body = checkedBody(ephemeralAttachBodySchema, {
      device: required(values, 'device', 'DEV'),
      project_id: projectOf(values),
      ...(scope === undefined ? {} : { key_scope: scope }),
      ...(keyId === undefined ? {} : { key: { id: keyId } }),
      ...mappingFields(values),
      ...authFromEnv(),
    });
    printAttach(values, await connectDaemon(values).request<AttachAnswer>('PUT', target, body));
    return exitCodes.ok;
  },
};

const detach: Command = {
  path: ['ephemeral', 'detach'],
  summary: 'close an ephemeral disk; with --erase, destroy its data for good (crypto-erase)',
  usage: 'INSTANCE DISK [--erase --project P [--key-id ID] [--device DEV]] [--json]',
  positionals: 2,
  notes: [
    '--erase wipes every LUKS keyslot and deletes an instance-scoped key: the data can never be read',
    'again. A project-scoped key is kept for the project\'s other disks. --device names the disk',
    'when it is no longer mapped (erase after an earlier detach).',
  ].join('\n'),
  options: {
    erase: { type: 'boolean', help: 'wipe the keyslots and delete an instance-scoped key (irreversible)' },
    project: { ...daemonOptions.project, help: 'project (tenant) of the disk; required with --erase' },
    'key-id': { type: 'string', help: 'the disk\'s key, when it was attached with --key-id', valueName: 'ID' },
    device: { ...daemonOptions.device, help: 'the disk, where it is now if it moved (proven by its LUKS UUID and header token, never by its path)' },
  },
  async run({ values, positionals }: CommandInput) {
    const erase = values['erase'] === true;
    const target = `${path(positionals)}${erase ? '?erase=true' : ''}`;
    const keyId = stringOption(values, 'key-id');
    const device = stringOption(values, 'device');
    const project = stringOption(values, 'project') ?? (erase ? projectOf(values) : undefined);
    if (!erase && (keyId !== undefined || device !== undefined)) throw new UsageError('--key-id and --device only matter with --erase');
    const body =
      project === undefined
        ? undefined
        : checkedBody(ephemeralDetachBodySchema, {
            project_id: project,
            ...(keyId === undefined ? {} : { key: { id: keyId } }),
            ...(device === undefined ? {} : { device }),
            ...authFromEnv(),
          });
    printDetach(values, await connectDaemon(values).request<DetachAnswer>('DELETE', target, body));
    return exitCodes.ok;
  },
};

export const ephemeralCommands: Command[] = [attach, detach];
