"""Drives os-brick's encryptor entry point as nova's libvirt driver calls it, one step per line.

Run by test/python/nova-brick.vm.test.ts with /usr/bin/python3 (Debian's
python3-os-brick). Each line on stdin is a step, {"op": "attach"|"detach"|
"extend", "provider": ..., "device_path": ..., "key_id": ..., "key_hex": ...,
"project": ..., "token": ...}; the answer is one line {"result": ...} or
{"error": {...}}. Between them, the encryptor's commands (os-brick's own
classes run cryptsetup, ln and blockdev through `execute`) go out as
{"run": {"argv", "stdin"}} lines and their outcome comes back as
{"ran": {"code", "stdout", "stderr"}}: the test runs them in the VM, where the
devices are. portcullis_brick's classes use no `execute`; they talk to
portcullisd's socket ($PORTCULLIS_SOCKET) on this host.
"""
import binascii
import json
import sys

from oslo_concurrency import processutils
from os_brick import encryptors

_out = sys.stdout
sys.stdout = sys.stderr  # anything printed by the libraries is a log, not the protocol


def send(obj):
    _out.write(json.dumps(obj) + '\n')
    _out.flush()


def receive():
    line = sys.stdin.readline()
    if not line:
        sys.exit(0)
    return json.loads(line)


def guest_execute(*cmd, **kwargs):
    """processutils.execute's contract, the command running in the VM's guest."""
    argv = [str(c) for c in cmd]
    send({'run': {'argv': argv, 'stdin': kwargs.get('process_input')}})
    ran = receive()['ran']
    check = kwargs.get('check_exit_code', True)
    allowed = [0] if check is True else ([check] if isinstance(check, int) and check is not False else (check or []))
    if check is not False and ran['code'] not in allowed:
        raise processutils.ProcessExecutionError(stdout=ran['stdout'], stderr=ran['stderr'],
                                                 exit_code=ran['code'], cmd=' '.join(argv))
    return ran['stdout'], ran['stderr']


class StubKey(object):
    def __init__(self, raw):
        self._raw = raw

    def get_encoded(self):
        return self._raw


class StubKeyManager(object):
    """Castellan's get() for os-brick's own classes: the same key bytes portcullisd's keystore holds."""

    def __init__(self, key_id, raw):
        self._key_id = key_id
        self._raw = raw

    def get(self, context, key_id):
        assert key_id == self._key_id, key_id
        return StubKey(self._raw)


class Context(object):
    """nova's RequestContext, as far as an encryptor reads it."""

    def __init__(self, project_id, auth_token):
        self.project_id = project_id
        self.auth_token = auth_token


def step(req):
    connection_info = {'driver_volume_type': 'iscsi', 'serial': 'vol-test',
                       'data': {'device_path': req['device_path'], 'volume_id': 'vol-test'}}
    encryption = {'encryption_key_id': req['key_id'], 'control_location': 'front-end',
                  'cipher': req.get('cipher'), 'key_size': req.get('key_size'), 'provider': req['provider']}
    keymgr = StubKeyManager(req['key_id'], binascii.unhexlify(req['key_hex']))
    encryptor = encryptors.get_volume_encryptor('sudo nova-rootwrap /etc/nova/rootwrap.conf', connection_info,
                                                keymgr, guest_execute, **encryption)
    cls = '%s.%s' % (type(encryptor).__module__, type(encryptor).__name__)
    context = Context(req.get('project'), req.get('token'))
    if req['op'] == 'attach':
        value = encryptor.attach_volume(context, **encryption)
    elif req['op'] == 'detach':
        value = encryptor.detach_volume(**encryption)
    else:
        value = encryptor.extend_volume(context, **encryption)
    return {'class': cls, 'value': value}


def main():
    while True:
        req = receive()
        try:
            send({'result': step(req)})
        except Exception as e:  # the test asserts on it
            send({'error': {'type': '%s.%s' % (type(e).__module__, type(e).__name__), 'message': str(e),
                            'code': getattr(e, 'error_code', None), 'exit_code': getattr(e, 'exit_code', None)}})


if __name__ == '__main__':
    main()
