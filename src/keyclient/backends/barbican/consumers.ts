import { isTransient, KeyClientError } from '../../errors.js';
import type { RequestContext, SecretConsumer, SecretConsumers } from '../../key-manager.js';
import { secretUuid } from './wire.js';

/** What consumers need from the backend: one authenticated Barbican JSON call. */
export interface ConsumerCall {
  (ctx: RequestContext, c: { method: 'GET' | 'POST' | 'DELETE'; path: string; body?: Buffer; secretId?: string; headers?: Record<string, string> }): Promise<Record<string, unknown>>;
}

/** Secret consumers arrived with Barbican's API microversion 1.1 (Barbican 15, Wallaby); requests must ask for it. */
export const CONSUMERS_VERSION = { 'openstack-api-version': 'key-manager 1.1' } as const;

/**
 * Barbican secret consumers (POST/DELETE /v1/secrets/{id}/consumers). Whether
 * the server has them is asked once, from its version document (`GET /v1`
 * answers max_version "1.1"); an older Barbican ignores the version header
 * and has no consumers route, whose 404 would otherwise read as "no such
 * secret". A failed probe is asked again next time.
 */
export function barbicanConsumers(json: ConsumerCall): SecretConsumers {
  let supported: Promise<boolean> | undefined;

  function probe(ctx: RequestContext): Promise<boolean> {
    if (supported === undefined) {
      const asked = json(ctx, { method: 'GET', path: '', headers: { ...CONSUMERS_VERSION } }).then((doc) => {
        const version = doc['version'];
        const max = typeof version === 'object' && version !== null ? (version as Record<string, unknown>)['max_version'] : undefined;
        return typeof max === 'string' && atLeast(max, 1, 1);
      });
      supported = asked;
      asked.catch(() => {
        if (supported === asked) supported = undefined;
      });
    }
    return supported;
  }

  const body = (consumer: SecretConsumer) => Buffer.from(JSON.stringify({ service: consumer.service, resource_type: consumer.resourceType, resource_id: consumer.resourceId }));

  return {
    async register(ctx, id, consumer) {
      const uuid = secretUuid(id);
      if (!(await probe(ctx))) return 'unsupported';
      // Barbican creates or updates: registering the same consumer twice leaves one.
      await json(ctx, { method: 'POST', path: `/secrets/${uuid}/consumers`, body: body(consumer), secretId: uuid, headers: { ...CONSUMERS_VERSION } });
      return 'registered';
    },
    async remove(ctx, id, consumer) {
      const uuid = secretUuid(id);
      if (!(await probe(ctx))) return 'unsupported';
      try {
        await json(ctx, { method: 'DELETE', path: `/secrets/${uuid}/consumers`, body: body(consumer), secretId: uuid, headers: { ...CONSUMERS_VERSION } });
        return 'removed';
      } catch (err) {
        // 404: the consumer (or the secret, which takes its consumers with it) is gone, which is what removal wants.
        if (err instanceof KeyClientError && err.code === 'E_KEY_NOT_FOUND' && !isTransient(err)) return 'absent';
        throw err;
      }
    },
  };
}

function atLeast(version: string, major: number, minor: number): boolean {
  const m = /^(\d+)\.(\d+)$/.exec(version);
  if (m === null) return false;
  const [a, b] = [Number(m[1]), Number(m[2])];
  return a > major || (a === major && b >= minor);
}
