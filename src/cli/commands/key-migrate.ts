import type { KeyManager, RequestContext } from '../../keyclient/key-manager.js';
import { isBackendName, backendNames, type BackendName } from '../../keyclient/registry.js';
import { isPortcullisError } from '../../errors.js';
import { exitCodes, stringOption, stringsOption, type Command, type CommandInput } from '../command.js';
import { contextFor, withKeyManager } from '../key-manager-session.js';
import { printJson, printTable, UsageError } from '../output.js';

interface Moved {
  project: string;
  source_id: string;
  target_id: string | null;
  type: string;
  status: 'copied' | 'present' | 'would-copy';
}

/**
 * Copies every object of the given projects from one backend to another: the
 * way off nova's fixed key (`--from fixed --to local`), or between key
 * managers. Nothing is deleted from the source; a backend that can keep ids
 * (local) keeps them, so volumes that name the old id still find their key.
 */
export const keyMigrateCommand: Command = {
  path: ['key', 'migrate'],
  summary: 'copy all objects of a project from one backend to another (the source is left as it was)',
  usage: '--from BACKEND --to BACKEND --project P [--project P2 ...] [--dry-run] [--json]',
  options: {
    from: { type: 'string', help: `source backend (${backendNames.join(', ')})`, valueName: 'BACKEND' },
    to: { type: 'string', help: 'target backend', valueName: 'BACKEND' },
    project: { type: 'string', multiple: true, help: 'project to migrate; repeat for several', valueName: 'P' },
    'dry-run': { type: 'boolean', help: 'list what would be copied, copy nothing' },
  },
  async run({ values }: CommandInput) {
    const from = backendFlag(values, 'from');
    const to = backendFlag(values, 'to');
    if (from === to) throw new UsageError('--from and --to name the same backend');
    const projects = stringsOption(values, 'project');
    if (projects.length === 0) throw new UsageError('--project P is required (repeat it for several projects)');
    const dryRun = values['dry-run'] === true;
    const moved = await withKeyManager({ ...values, backend: from }, async (source, open) => {
      const target = await open(to);
      const rows: Moved[] = [];
      for (const projectId of projects) {
        rows.push(...(await migrateProject(source, target, contextFor(projectId), dryRun)));
      }
      return rows;
    });
    if (values['json'] === true) printJson(moved);
    else printTable(['PROJECT', 'SOURCE ID', 'TARGET ID', 'TYPE', 'STATUS'], moved.map((m) => [m.project, m.source_id, m.target_id ?? '-', m.type, m.status]));
    return exitCodes.ok;
  },
};

function backendFlag(values: CommandInput['values'], flag: 'from' | 'to'): BackendName {
  const name = stringOption(values, flag);
  if (name === undefined || !isBackendName(name)) throw new UsageError(`--${flag} must name a backend (${backendNames.join(', ')})`);
  return name;
}

async function migrateProject(source: KeyManager, target: KeyManager, ctx: RequestContext, dryRun: boolean): Promise<Moved[]> {
  const rows: Moved[] = [];
  for (const meta of await source.list(ctx)) {
    const sourceId = meta.id as string;
    const base = { project: ctx.projectId, source_id: sourceId, type: meta.type };
    // Re-running a migration must not duplicate what a previous run copied with its id kept.
    if (await exists(target, ctx, sourceId)) {
      rows.push({ ...base, target_id: sourceId, status: 'present' });
      continue;
    }
    if (dryRun) {
      rows.push({ ...base, target_id: null, status: 'would-copy' });
      continue;
    }
    const obj = await source.get(ctx, sourceId);
    try {
      rows.push({ ...base, target_id: await target.store(ctx, obj), status: 'copied' });
    } finally {
      obj.zeroize();
    }
  }
  return rows;
}

async function exists(km: KeyManager, ctx: RequestContext, id: string): Promise<boolean> {
  try {
    await km.get(ctx, id, { metadataOnly: true });
    return true;
  } catch (err) {
    if (isPortcullisError(err, 'E_KEY_NOT_FOUND') || isPortcullisError(err, 'E_INVALID_ARGUMENT')) return false;
    throw err;
  }
}
