"""portcullisd's errors as the exception types nova expects from os-brick's encryptors.

os-brick's own encryptors fail with ``ProcessExecutionError`` when cryptsetup
fails, ``VolumeDeviceNotFound``/``VolumeEncryptionNotSupported`` for a missing
or unsupported device, and whatever the key manager raises for keys. Each
error here keeps that type and adds the daemon's code, HTTP status and
details, and its message names the request and quotes the daemon's code and
message, so nova's log and the instance fault stay actionable.
"""
from oslo_concurrency import processutils

from os_brick import exception

# The codes this package raises itself, before or instead of a daemon's answer
# (every other code is the daemon's). docs/errors.md documents them;
# test/errors-doc.test.ts reads this table.
CLIENT_ERRORS = {
    'E_NO_PROJECT': 'no project in the context and none recorded on this host for the key',
    'E_DAEMON_UNREACHABLE': 'the socket could not be connected to; nothing was sent',
    'E_DAEMON_PROTOCOL': 'an error answer without a Socket API error body',
    'E_BAD_REQUEST': 'the encryption metadata names no key',
}

# Failures of a cryptsetup step or of the device, with cryptsetup's documented
# exit code where the daemon's code has one (os-brick callers read exit_code).
COMMAND_CODES = {
    'E_CRYPTSETUP_PARAMS': 1,
    'E_CRYPTSETUP_FAILED': 1,
    'E_WRONG_KEY': 2,
    'E_CRYPTSETUP_NOMEM': 3,
    'E_DEVICE_WRONG': 4,
    'E_DEVICE_BUSY': 5,
    'E_VOLUME_BUSY': 5,
    'E_CRYPTSETUP_TIMEOUT': None,
    'E_DEVICE_NOT_BLANK': 1,
    'E_DEVICE_NOT_PLAIN': 1,
    'E_DEVICE_UNREADABLE': 1,
    'E_DEVICE_CHANGED': 1,
    'E_DEVICE_IS_MAPPING': 1,
    'E_LUKS_HEADER': 1,
    'E_DM_UNAVAILABLE': 1,
}


class PortcullisError(exception.BrickException):
    """portcullisd refused or failed a request (or could not be reached).

    ``error_code`` is the daemon's stable code (docs/errors.md), ``status`` the
    HTTP status (None when nothing was answered), ``details`` its details.
    """
    message = 'portcullisd: %(reason)s'

    def __init__(self, reason, error_code='E_INTERNAL', status=None, details=None):
        super().__init__(reason=reason)
        self.error_code = error_code
        self.status = status
        self.details = details or {}


class PortcullisKeyError(PortcullisError):
    """The key manager behind portcullisd said no (not found, forbidden) or could not be reached."""


class PortcullisUnavailable(PortcullisError):
    """The daemon could not be reached: nothing was sent."""


class PortcullisCommandError(processutils.ProcessExecutionError):
    """A cryptsetup step or the device failed, as os-brick's ProcessExecutionError."""

    def __init__(self, reason, error_code, status, details, exit_code, cmd):
        super().__init__(stdout='', stderr=reason, exit_code=exit_code, cmd=cmd,
                         description='portcullisd: %s' % reason)
        self.error_code = error_code
        self.status = status
        self.details = details or {}


class PortcullisDeviceNotFound(exception.VolumeDeviceNotFound):
    def __init__(self, reason, device, error_code, status, details):
        super().__init__(device=device)
        self.msg = '%s (portcullisd: %s)' % (self.msg, reason)
        self.args = (self.msg,)
        self.error_code = error_code
        self.status = status
        self.details = details or {}


def error_from_answer(method, path, answer, device=None):
    """The exception for a non-2xx answer of ``method path``."""
    err = (answer.body or {}).get('error') if isinstance(answer.body, dict) else None
    if not isinstance(err, dict):
        reason = '%s %s answered HTTP %d with no error body: %s' % (method, path, answer.status, answer.text[:200])
        return PortcullisError(reason, 'E_DAEMON_PROTOCOL', answer.status)
    code = str(err.get('code', 'E_INTERNAL'))
    details = err.get('details') if isinstance(err.get('details'), dict) else {}
    reason = '%s %s failed: %s: %s' % (method, path, code, err.get('message', ''))
    if code in COMMAND_CODES:
        return PortcullisCommandError(reason, code, answer.status, details, COMMAND_CODES[code],
                                      'portcullisd %s %s' % (method, path))
    if code == 'E_DEVICE_NOT_FOUND':
        return PortcullisDeviceNotFound(reason, device, code, answer.status, details)
    if code.startswith('E_KEY_') or code.startswith('E_BACKEND_'):
        return PortcullisKeyError(reason, code, answer.status, details)
    return PortcullisError(reason, code, answer.status, details)
