import { z } from 'zod';
import { cacheOptionsSchema } from '../keyclient/cache.js';
import { backendNames, backends, type BackendName } from '../keyclient/registry.js';
import { retryOptionsSchema } from '../keyclient/retry.js';
import { limitsOptionsSchema, logOptionsSchema, luksOptionsSchema, rolesOptionsSchema, runtimeOptionsSchema, socketOptionsSchema } from './daemon-options.js';

/**
 * The whole configuration. Each backend owns its section's schema; this file
 * only composes them. Unknown keys are rejected everywhere (strict objects),
 * so a typo is an error, not a silently ignored setting.
 */
type BackendSections = { [K in BackendName]: z.ZodOptional<(typeof backends)[K]['optionsSchema']> };
/** One optional section per registered backend, named as registry.ts names it: a new backend needs no line here. */
const backendSections = Object.fromEntries(backendNames.map((name) => [name, backends[name].optionsSchema.optional()])) as BackendSections;

const keyManagerSchema = z
  .strictObject({
    backend: z.enum(backendNames as [BackendName, ...BackendName[]]).default('local'),
    ...backendSections,
  })
  .transform((km, ctx) => {
    // The selected backend's section may be omitted when its defaults suffice;
    // fill it here so the rest of the program never sees an absent section.
    if (km[km.backend] !== undefined) return km;
    const parsed = backends[km.backend].optionsSchema.safeParse({});
    if (parsed.success) return { ...km, [km.backend]: parsed.data };
    for (const issue of parsed.error.issues) {
      ctx.addIssue({ code: 'custom', path: [km.backend, ...issue.path.map(String)], message: issue.message });
    }
    return z.NEVER;
  })
  .superRefine((km, ctx) => {
    // The backends' own schemas take any string as a file; the daemon runs with "/" as its working directory.
    for (const [path, value] of fileSettings(km, [])) {
      const problem = !value.startsWith('/') ? 'must be an absolute path (start with "/")' : value.includes('\0') ? 'must not contain a NUL byte' : undefined;
      if (problem !== undefined) ctx.addIssue({ code: 'custom', path, message: problem });
    }
  });

/** Every string setting that names a file (`path`, `*_file`, `*_path`), with its key path. */
function fileSettings(value: unknown, at: string[]): Array<[string[], string]> {
  if (typeof value !== 'object' || value === null || Array.isArray(value) || at.length > 4) return [];
  return Object.entries(value).flatMap(([key, inner]): Array<[string[], string]> => {
    if (typeof inner === 'string' && /^(path|.*_file|.*_path)$/.test(key)) return [[[...at, key], inner]];
    return fileSettings(inner, [...at, key]);
  });
}

export const configSchema = z.strictObject({
  // prefault, not default: an absent section is parsed as {} so its own defaults and checks apply.
  key_manager: keyManagerSchema.prefault({}),
  cache: cacheOptionsSchema.prefault({}),
  retry: retryOptionsSchema.prefault({}),
  socket: socketOptionsSchema.prefault({}),
  roles: rolesOptionsSchema.prefault({}),
  limits: limitsOptionsSchema.prefault({}),
  luks: luksOptionsSchema.prefault({}),
  runtime: runtimeOptionsSchema.prefault({}),
  log: logOptionsSchema.prefault({}),
});

export type Config = z.output<typeof configSchema>;
/** The configuration before validation, as a file would spell it. */
export type ConfigInput = z.input<typeof configSchema>;
