import { createLogger } from '../../daemon/log.js';
import { keyError } from '../../keyclient/errors.js';
import { exitCodes, type Command, type CommandInput } from '../command.js';
import { requestContext, withKeyManager } from '../key-manager-session.js';
import { printJson } from '../output.js';

/**
 * `portcullis key adopt UID --project P`: an admin claims, for one project,
 * a KMIP object another client registered (docs/kmip.md, "Keys made
 * elsewhere"). Like the other key commands it acts with the service's own
 * key-manager credentials, so who may run it is who may read them (root, or
 * the daemon's user): the admin. Every attempt leaves one audit line, in the
 * daemon's audit file when log.audit_file is set, else on standard error.
 */
export const keyAdoptCommand: Command = {
  path: ['key', 'adopt'],
  summary: 'claim a KMIP object made by another client for one project (admin; audited)',
  usage: 'UID --project P [--json]',
  positionals: 1,
  options: { project: { type: 'string', help: 'the project (tenant) the object is to belong to; or $PORTCULLIS_PROJECT', valueName: 'P' } },
  notes:
    'Refused (E_KEY_OWNED_ELSEWHERE, exit 1) when the object already belongs to another project; adopting it again for the same project is a no-op ("already"). Needs key_manager.kmip.adoptions_file.',
  async run({ values, positionals }: CommandInput) {
    const id = positionals[0] as string;
    const ctx = requestContext(values);
    const outcome = await withKeyManager(values, async (km, _open, config) => {
      const log = createLogger({ ...config.log, format: 'json' }, process.stderr);
      const fields = { op: 'adopt', project_id: ctx.projectId, key_id: id, backend: km.name, uid: process.getuid?.() ?? -1 };
      try {
        if (km.adoption === undefined) throw keyError('E_NOT_SUPPORTED', `The ${config.key_manager.backend} backend has no objects made elsewhere to adopt (only kmip does); nothing was changed`);
        const result = await km.adoption.adopt(ctx, id);
        log.audit('key_adopt', { ...fields, outcome: result });
        return result;
      } catch (err) {
        log.audit('key_adopt', { ...fields, outcome: (err as { code?: string }).code ?? 'E_INTERNAL' });
        throw err;
      } finally {
        await log.close();
      }
    });
    if (values['json'] === true) printJson({ id, project_id: ctx.projectId, outcome });
    else process.stdout.write(`${outcome === 'adopted' ? 'adopted' : 'already adopted'}: ${id} belongs to project ${ctx.projectId}\n`);
    return exitCodes.ok;
  },
};
