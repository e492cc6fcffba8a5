import type { RequestContext, SecretConsumer } from '../../keyclient/key-manager.js';
import { codeOf, keyContext, type ServiceDeps } from './context.js';

/**
 * Barbican secret consumers for what portcullis opens (docs/api.md,
 * "Secret consumers"): an attach registers `portcullis / volume / NAME` on
 * the key's secret, and the end of the mapping's record (a volume's detach,
 * an ephemeral disk's erase) removes it. Best effort by design: the key was
 * fetched and the mapping is open, so a consumer that cannot be recorded
 * fails nothing; it is logged and counted.
 */
export interface ConsumerTracker {
  /** After a successful attach. Never throws. */
  attached(ctx: RequestContext, keyId: string, resourceId: string): Promise<void>;
  /** After the record of `resourceId` was deleted. Never throws. */
  released(projectId: string, token: string | undefined, keyId: string, resourceId: string): Promise<void>;
}

export const consumerOf = (resourceId: string): SecretConsumer => ({ service: 'portcullis', resourceType: 'volume', resourceId });

const trackers = new WeakMap<ServiceDeps, ConsumerTracker>();

/** The daemon's one tracker for `deps` (the volume and ephemeral services share it, so they share what it remembers). */
export function consumersOf(deps: ServiceDeps): ConsumerTracker {
  let tracker = trackers.get(deps);
  if (tracker === undefined) {
    tracker = consumerTracker(deps);
    trackers.set(deps, tracker);
  }
  return tracker;
}

function consumerTracker(deps: ServiceDeps): ConsumerTracker {
  // (backend, secret, resource) known registered in this process: a warm re-attach sends nothing.
  // Not persisted: after a restart the first attach of each registers again, which Barbican takes as a no-op update.
  const registered = new Set<string>();
  let toldUnsupported = false;
  const memo = (keyId: string, resourceId: string) => JSON.stringify([deps.keys().name, keyId, resourceId]);

  function unsupported(): void {
    if (toldUnsupported) return;
    toldUnsupported = true;
    deps.log.info('the key manager does not record secret consumers (Barbican API microversion 1.1 needed), skipping consumer registration', { backend: deps.backend() });
  }

  return {
    async attached(ctx, keyId, resourceId) {
      const consumers = deps.keys().consumers;
      const key = memo(keyId, resourceId);
      if (consumers === undefined || registered.has(key)) return;
      registered.add(key);
      try {
        const outcome = await consumers.register(ctx, keyId, consumerOf(resourceId));
        deps.metrics.consumer('register', outcome);
        if (outcome === 'unsupported') unsupported();
        else deps.log.audit('key_consumer', { op: 'register', project_id: ctx.projectId, key_id: keyId, resource_id: resourceId, outcome: 'ok' });
      } catch (err) {
        registered.delete(key);
        deps.metrics.consumer('register', codeOf(err));
        deps.log.warn('could not register portcullis as a consumer of the key, ignoring (the volume is attached; the key manager will not list this use of the key)', {
          project_id: ctx.projectId, key_id: keyId, resource_id: resourceId, code: codeOf(err), reason: (err as Error).message,
        });
      }
    },
    async released(projectId, token, keyId, resourceId) {
      const consumers = deps.keys().consumers;
      registered.delete(memo(keyId, resourceId));
      if (consumers === undefined) return;
      try {
        // Always asked, remembered or not: a consumer registered before a restart is not in `registered`.
        const outcome = await consumers.remove(keyContext(projectId, token), keyId, consumerOf(resourceId));
        deps.metrics.consumer('remove', outcome);
        if (outcome === 'unsupported') unsupported();
        else deps.log.audit('key_consumer', { op: 'remove', project_id: projectId, key_id: keyId, resource_id: resourceId, outcome });
      } catch (err) {
        deps.metrics.consumer('remove', codeOf(err));
        deps.log.warn('could not remove portcullis as a consumer of the key, ignoring (the key manager still lists this volume as using the key)', {
          project_id: projectId, key_id: keyId, resource_id: resourceId, code: codeOf(err), reason: (err as Error).message,
        });
      }
    },
  };
}
