import { z } from 'zod';
import { keyError } from '../../errors.js';
import type { KeystoneCredentials } from './keystone.js';
import { absoluteFile, resolveSecrets, secretFields, seconds } from '../../options.js';

/**
 * The barbican backend's options: Castellan's [barbican] options under
 * portcullis names, with Castellan's defaults, plus Keystone auth.
 */

/**
 * resolveSecrets() is typed as a plain ZodType, but what it returns is a pipe
 * whose input still carries the `type` literal, which is all
 * discriminatedUnion needs at run time; this restores that in the type.
 */
function discriminable<O>(schema: z.ZodType<O, unknown>): z.ZodType<O, unknown> & z.core.$ZodTypeDiscriminable {
  return schema as z.ZodType<O, unknown> & z.core.$ZodTypeDiscriminable;
}

const httpUrl = () => z.url({ protocol: /^https?$/, error: 'must be an http:// or https:// URL' });

const authSchema = z.discriminatedUnion('type', [
  /** Barbican's unauthenticated-context pipeline: X-Project-Id from each request. Development only. */
  z.strictObject({ type: z.literal('none') }),
  /**
   * Keystone password. Without project_name/project_id, each request's
   * project is the token's scope (one cached token per project), so Barbican
   * itself keeps tenants apart.
   */
  discriminable(
    resolveSecrets(
      z.strictObject({
        type: z.literal('password'),
        auth_url: httpUrl(),
        username: z.string().min(1),
        ...secretFields('password'),
        user_domain_name: z.string().min(1).default('Default'),
        project_name: z.string().min(1).optional(),
        project_id: z.string().min(1).optional(),
        project_domain_name: z.string().min(1).default('Default'),
      }),
      ['password'],
    ).superRefine((auth, ctx) => {
      if (auth.password === undefined) ctx.addIssue({ code: 'custom', path: ['password'], message: 'give password, password_file or password_credential' });
      if (auth.project_name !== undefined && auth.project_id !== undefined) {
        ctx.addIssue({ code: 'custom', path: ['project_id'], message: 'give project_name or project_id, not both' });
      }
    }),
  ),
  /** A Keystone application credential; its project is fixed by the credential. */
  discriminable(
    resolveSecrets(
      z.strictObject({
        type: z.literal('application_credential'),
        auth_url: httpUrl(),
        application_credential_id: z.string().min(1),
        ...secretFields('application_credential_secret'),
      }),
      ['application_credential_secret'],
    ).superRefine((auth, ctx) => {
      if (auth.application_credential_secret === undefined) {
        ctx.addIssue({ code: 'custom', path: ['application_credential_secret'], message: 'give application_credential_secret, _file or _credential' });
      }
    }),
  ),
  /** Pass-through only: every request must carry its caller's Keystone token. */
  z.strictObject({ type: z.literal('token'), auth_url: httpUrl() }),
]);

/** Castellan's [barbican] options under their portcullis names, with Castellan's defaults. */
export const barbicanOptionsSchema = z
  .strictObject({
    /** Fixed Barbican URL (http://host:9311); without it, the Keystone catalog's key-manager endpoint. */
    endpoint: httpUrl().optional(),
    api_version: z.literal('v1').default('v1'),
    endpoint_type: z.enum(['public', 'internal', 'admin']).default('public'),
    region_name: z.string().min(1).optional(),
    /** Order polls after the first, retry_delay seconds apart, before a create gives up. */
    number_of_retries: z.number().int().min(0).max(3600).default(60),
    retry_delay: seconds().max(300).default(1),
    verify_ssl: z.boolean().default(true),
    /** PEM CA bundle to verify Barbican's and Keystone's certificates against. */
    verify_ssl_path: z.string().min(1).optional(),
    /** Seconds per HTTP request, connect to last byte. */
    timeout: seconds().positive().max(600).default(30),
    auth: authSchema.default({ type: 'none' }),
    /**
     * Where to keep each secret's type, algorithm and bit length (never its
     * bytes) across restarts, so that a restarted daemon asks Barbican only for
     * the payload. Absolute; unset, every first fetch asks for both.
     */
    metadata_file: absoluteFile().optional(),
  })
  .superRefine((opts, ctx) => {
    if (opts.auth.type === 'none' && opts.endpoint === undefined) {
      ctx.addIssue({ code: 'custom', path: ['endpoint'], message: 'auth type "none" has no Keystone catalog to find Barbican in; set endpoint' });
    }
  });

export type BarbicanOptions = z.output<typeof barbicanOptionsSchema>;

/**
 * The Keystone credentials `auth` names; undefined for the unauthenticated pipeline.
 * @throws E_INVALID_ARGUMENT when options skipped validation and lack the secret.
 */
export function keystoneCredentials(auth: BarbicanOptions['auth']): KeystoneCredentials | undefined {
  switch (auth.type) {
    case 'none':
      return undefined;
    case 'token':
      return { type: 'token', authUrl: auth.auth_url };
    case 'application_credential':
      return { type: 'application_credential', authUrl: auth.auth_url, id: auth.application_credential_id, secret: required(auth.application_credential_secret, 'auth.application_credential_secret') };
    case 'password': {
      const creds: KeystoneCredentials = {
        type: 'password',
        authUrl: auth.auth_url,
        username: auth.username,
        password: required(auth.password, 'auth.password'),
        userDomainName: auth.user_domain_name,
        projectDomainName: auth.project_domain_name,
      };
      if (auth.project_id !== undefined) creds.projectId = auth.project_id;
      if (auth.project_name !== undefined) creds.projectName = auth.project_name;
      return creds;
    }
  }
}

function required(value: string | undefined, name: string): string {
  if (value === undefined) throw keyError('E_INVALID_ARGUMENT', `${name} is not set; the barbican backend needs it to authenticate`);
  return value;
}
