"""A small client of portcullisd's Socket API v1: HTTP/1.1 and JSON over a unix socket.

Standard library only. Which socket: ``$PORTCULLIS_SOCKET``, else
``socket.path`` in ``$PORTCULLIS_CONFIG`` (default
``/etc/portcullis/portcullis.yaml``), else ``/run/portcullis/portcullis.sock``.
"""
import http.client
import json
import os
import socket

DEFAULT_SOCKET = '/run/portcullis/portcullis.sock'
DEFAULT_CONFIG = '/etc/portcullis/portcullis.yaml'
# Attaches that format a volume take seconds; under emulation minutes. The daemon bounds its own work.
DEFAULT_TIMEOUT = 330.0


class DaemonUnreachable(Exception):
    """Nothing was sent: the socket is missing, refused the connection or denied this user."""

    def __init__(self, socket_path, origin, cause):
        super().__init__('portcullisd is not reachable at %s (%s): %s' % (socket_path, origin, cause))
        self.socket_path = socket_path
        self.cause = cause


class DaemonAnswer(object):
    """One answer: the HTTP status and the parsed JSON body (None when the body is not JSON)."""

    def __init__(self, status, body, text):
        self.status = status
        self.body = body
        self.text = text


def socket_from_config(path):
    """``socket.path`` from the daemon's YAML config, or None.

    A minimal reader for the one key needed (the package must not depend on a
    YAML library): a top-level ``socket:`` block and its indented ``path:``.
    """
    try:
        with open(path, encoding='utf-8') as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    inside = False
    for line in lines:
        stripped = line.split('#', 1)[0].rstrip()
        if not stripped:
            continue
        if not line[0].isspace():
            inside = stripped == 'socket:'
            continue
        key, sep, value = stripped.strip().partition(':')
        if inside and sep and key == 'path':
            value = value.strip().strip('"\'')
            return value or None
    return None


def resolve_socket(environ=None):
    """The socket path and where it came from (quoted in errors)."""
    environ = os.environ if environ is None else environ
    if environ.get('PORTCULLIS_SOCKET'):
        return environ['PORTCULLIS_SOCKET'], '$PORTCULLIS_SOCKET'
    config = environ.get('PORTCULLIS_CONFIG') or DEFAULT_CONFIG
    found = socket_from_config(config)
    if found:
        return found, 'socket.path in %s' % config
    return DEFAULT_SOCKET, 'the default'


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, socket_path, timeout):
        super().__init__('portcullis', timeout=timeout)
        self._socket_path = socket_path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class DaemonClient(object):
    def __init__(self, socket_path=None, origin=None, timeout=DEFAULT_TIMEOUT):
        if socket_path is None:
            socket_path, origin = resolve_socket()
        self.socket_path = socket_path
        self.origin = origin or 'given'
        self.timeout = timeout

    def request(self, method, path, body=None):
        """Sends one request; returns a DaemonAnswer for any status.

        :raises DaemonUnreachable: when the connection could not be made (nothing was sent)
        :raises OSError, http.client.HTTPException: when the connection broke mid-request
        """
        conn = _UnixConnection(self.socket_path, self.timeout)
        try:
            try:
                conn.connect()
            except OSError as e:
                raise DaemonUnreachable(self.socket_path, self.origin, e)
            payload = None if body is None else json.dumps(body).encode('utf-8')
            headers = {'Accept': 'application/json'}
            if payload is not None:
                headers['Content-Type'] = 'application/json'
            conn.request(method, path, body=payload, headers=headers)
            res = conn.getresponse()
            text = res.read().decode('utf-8', 'replace')
        finally:
            conn.close()
        try:
            parsed = json.loads(text) if text else None
        except ValueError:
            parsed = None
        return DaemonAnswer(res.status, parsed, text)
