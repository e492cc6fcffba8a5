import { statSync } from 'node:fs';
import { keyError } from '../../errors.js';
import type { RequestContext } from '../../key-manager.js';
import { readPrivateFile, writePrivateFile } from '../../../util/private-file.js';
import type { KmipMetadata } from './objects.js';

/**
 * Objects another client registered (an HSM administrator, PyKMIP's own
 * client, Barbican's KMIP store) carry no portcullis-project attribute, so
 * no project sees them. An admin adopts one for one project (`portcullis key
 * adopt`); the claim is kept here, in `adoptions_file`, because KMIP's way
 * to add an attribute to an existing object (AddAttribute) is not served by
 * every server (PyKMIP 0.10 has none, and its SetAttribute refuses the
 * multi-valued Application Specific Information). docs/kmip.md.
 *
 * File: {"version":1,"servers":{"HOST:PORT":{"UID":{"project":"P","adopted_at":"ISO"}}}},
 * 0600, written whole and renamed; re-read whenever it changes, so a
 * running daemon sees an adoption made by the CLI without a restart.
 */
export interface Adoptions {
  /** The project object `uid` of this server was adopted for, if any. */
  projectOf(uid: string): string | undefined;
  /** The ids adopted for `projectId`. */
  idsOf(projectId: string): string[];
  /** Records the claim. @throws E_KEY_OWNED_ELSEWHERE when another project adopted it */
  claim(uid: string, projectId: string): 'adopted' | 'already';
  /** The object was destroyed: its claim goes. */
  forget(uid: string): void;
}

interface Claim {
  project: string;
  adopted_at: string;
}

type FileShape = { version: 1; servers: Record<string, Record<string, Claim>> };

export function openAdoptions(path: string, server: string): Adoptions {
  let seen: { stamp: string; file: FileShape } | undefined;

  function read(): FileShape {
    let stamp: string;
    try {
      const st = statSync(path);
      stamp = `${st.mtimeMs}:${st.size}:${st.ino}`;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { version: 1, servers: {} };
      throw unusable(path, err);
    }
    if (seen?.stamp === stamp) return seen.file;
    let file: FileShape;
    try {
      file = parse(readPrivateFile(path));
    } catch (err) {
      throw unusable(path, err);
    }
    seen = { stamp, file };
    return file;
  }

  const claims = (): Record<string, Claim> => Object.assign(Object.create(null) as Record<string, Claim>, read().servers[server] ?? {});

  function write(mine: Record<string, Claim>): void {
    const file = read();
    const next: FileShape = { version: 1, servers: { ...file.servers, [server]: mine } };
    try {
      writePrivateFile(path, `${JSON.stringify(next, null, 1)}\n`);
    } catch (err) {
      throw unusable(path, err);
    }
    seen = undefined;
  }

  return {
    projectOf: (uid) => claims()[uid]?.project,
    idsOf: (projectId) => Object.entries(claims()).filter(([, c]) => c.project === projectId).map(([uid]) => uid),
    claim(uid, projectId) {
      const mine = claims();
      const owner = mine[uid]?.project;
      if (owner === projectId) return 'already';
      if (owner !== undefined) throw ownedElsewhere(uid, projectId, owner, `adopted for project ${owner} (${path})`);
      write({ ...mine, [uid]: { project: projectId, adopted_at: new Date().toISOString() } });
      return 'adopted';
    },
    forget(uid) {
      const mine = claims();
      if (mine[uid] === undefined) return;
      delete mine[uid];
      write(mine);
    },
  };
}

/**
 * Adopts object `id` for the project of `ctx` after reading its attributes:
 * an object portcullis made for this project is 'already' its own, one made
 * for another project (or another adoption) is refused.
 * @throws E_KEY_OWNED_ELSEWHERE, E_NOT_SUPPORTED
 */
export function adoptObject(ctx: RequestContext, id: string, meta: KmipMetadata, adoptions: Adoptions | undefined): 'adopted' | 'already' {
  const project = ctx.projectId;
  if (meta.projects.length === 1 && meta.projects[0] === project) return 'already';
  if (meta.projects.length > 0) throw ownedElsewhere(id, project, meta.projects.join(', '), `made by portcullis for project ${meta.projects.join(', ')}`);
  if (meta.type === undefined) throw keyError('E_NOT_SUPPORTED', `KMIP object ${id} is of a type portcullis does not handle; not adopted`, { details: { id, objectType: meta.kmipType } });
  if (adoptions === undefined) {
    throw keyError('E_NOT_SUPPORTED', `Adopting KMIP object ${id} needs key_manager.kmip.adoptions_file, where portcullis records which project an adopted object belongs to; set it (the same file for the daemon and the CLI) and try again`, { details: { id } });
  }
  return adoptions.claim(id, project);
}

function ownedElsewhere(id: string, project: string, owner: string, how: string) {
  return keyError('E_KEY_OWNED_ELSEWHERE', `KMIP object ${id} already belongs to another project (${how}); refusing to adopt it for ${project}`, { details: { id, owner } });
}

function unusable(path: string, err: unknown) {
  return keyError('E_INVALID_ARGUMENT', `The KMIP adoptions file ${path} cannot be used: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
}

function parse(text: string): FileShape {
  const data = JSON.parse(text) as unknown;
  if (typeof data !== 'object' || data === null || (data as { version?: unknown }).version !== 1) throw new Error('not a version 1 adoptions file');
  const servers = (data as { servers?: unknown }).servers;
  if (typeof servers !== 'object' || servers === null) throw new Error('it has no "servers" object');
  for (const claims of Object.values(servers as Record<string, unknown>)) {
    if (typeof claims !== 'object' || claims === null) throw new Error('a server entry is not an object');
    for (const claim of Object.values(claims as Record<string, unknown>)) {
      if (typeof (claim as Claim | null)?.project !== 'string') throw new Error('a claim has no project');
    }
  }
  return data as FileShape;
}
