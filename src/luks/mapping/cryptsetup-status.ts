import { luksError } from '../errors.js';
import { cryptsetupFailureCode, exec, type ExecContext } from '../commands/exec.js';
import { tablelessDevice } from './host.js';
import { parseStatus, type MappingStatus } from './status.js';

/**
 * The admin views of mappings: what sysfs does not say (cipher, key size,
 * in use) from `cryptsetup status`, and every crypt mapping the kernel has.
 * A process per mapping, so never on the attach path, which reads sysfs.
 */

/**
 * `cryptsetup status` of one mapping, with the backing device's major:minor
 * from `quick` (sysfs) where it knows it; undefined when there is none.
 * @throws E_DM_UNAVAILABLE when the kernel has no device-mapper
 * @throws E_CRYPTSETUP_PARAMS when cryptsetup fails for another reason
 */
export async function describeMapping(ctx: ExecContext, name: string, quick: (name: string) => Promise<MappingStatus | undefined>): Promise<MappingStatus | undefined> {
  // Exit 4: no such active mapping. Not an error for a status query.
  const result = await exec(ctx, ['cryptsetup', 'status', name], { ok: [1, 4], what: `read the status of ${name}` });
  if (result.code === 0) {
    const full = parseStatus(name, result.stdout.toString('utf8'));
    const fromSysfs = await quick(name);
    return fromSysfs?.deviceRdev === undefined ? full : { ...full, deviceRdev: fromSysfs.deviceRdev };
  }
  // Exit 1 with nothing said: a dm device without a table (an open killed midway) is no active mapping either.
  if (result.code === 1 && (await tablelessDevice(ctx, name)) === undefined) {
    const stderr = result.stderr.toString('utf8').trim();
    throw luksError(cryptsetupFailureCode(1, stderr) ?? 'E_CRYPTSETUP_PARAMS', `cryptsetup exited 1 trying to read the status of ${name}: ${stderr || 'no reason given'}`, { details: { command: 'cryptsetup', exitCode: 1, stderr } });
  }
  return undefined;
}
