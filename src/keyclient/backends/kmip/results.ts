import { keyError, type KeyClientError } from '../../errors.js';
import { ResultReason } from './enums.js';
import { describeFailure, type ResponseItem } from './messages.js';

/**
 * A failed KMIP batch item as the KeyManager error contract names it
 * (docs/kmip.md lists the mapping). Result messages are the server's words:
 * they name objects and reasons, never key material, which is never quoted
 * back in a KMIP answer.
 */

export interface FailureContext {
  /** host:port, for messages. */
  where: string;
  /** The operation, for messages ("Get of 42"). */
  what: string;
  projectId: string;
  /** The object the request was about: Item Not Found then means E_KEY_NOT_FOUND. */
  id?: string | undefined;
  maxResponseBytes: number;
}

export function notFoundError(where: string, projectId: string, id: string): KeyClientError {
  return keyError('E_KEY_NOT_FOUND', `KMIP server ${where} has no object ${id} for project ${projectId}`, { details: { id } });
}

export function resultError(item: ResponseItem | undefined, f: FailureContext): KeyClientError {
  const { where, what, id } = f;
  if (item === undefined) return keyError('E_BACKEND_PROTOCOL', `KMIP server ${where} did not answer ${what}`);
  const said = describeFailure(item);
  const details = { resultReason: item.reason, ...(id ? { id } : {}) };
  switch (item.reason) {
    case ResultReason.ItemNotFound:
    case ResultReason.ObjectNotFound:
    case ResultReason.ObjectDestroyed:
      return id !== undefined ? notFoundError(where, f.projectId, id) : keyError('E_INVALID_ARGUMENT', `KMIP server ${where} refused ${what}: ${said}`, { details });
    case ResultReason.PermissionDenied:
    case ResultReason.NotAuthorised:
      return keyError('E_KEY_FORBIDDEN', `KMIP server ${where} refused ${what} for this client certificate: ${said}`, { details });
    case ResultReason.AuthenticationNotSuccessful:
      return keyError('E_BACKEND_AUTH', `KMIP server ${where} did not accept the client's credentials for ${what}: ${said}`, { details });
    case ResultReason.OperationNotSupported:
    case ResultReason.FeatureNotSupported:
    case ResultReason.KeyFormatTypeNotSupported:
      return keyError('E_NOT_SUPPORTED', `KMIP server ${where} does not support ${what}: ${said}`, { details });
    case ResultReason.InvalidField:
    case ResultReason.InvalidMessage:
    case ResultReason.MissingData:
    case ResultReason.IllegalOperation:
    case ResultReason.IndexOutOfBounds:
      return keyError('E_INVALID_ARGUMENT', `KMIP server ${where} refused ${what}: ${said}`, { details });
    case ResultReason.ResponseTooLarge:
      return keyError('E_BACKEND_PROTOCOL', `KMIP server ${where} says the answer to ${what} is over ${f.maxResponseBytes} bytes; narrow the request`, { details });
    default:
      // General Failure and the like: the server's 5xx. The request reached it.
      return keyError('E_BACKEND_UNAVAILABLE', `KMIP server ${where} failed ${what}: ${said}`, { details: { ...details, requestSent: true } });
  }
}
