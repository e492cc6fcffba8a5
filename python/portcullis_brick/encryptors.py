"""The encryptors nova loads by class path: os-brick's behaviour, portcullisd's work.

Seen from nova they are os-brick's LuksEncryptor, Luks2Encryptor and
CryptsetupEncryptor: the mapping is ``crypt-<basename of device_path>``, a
blank volume is formatted on first use (only when portcullisd proves it
blank), the ``device_path`` symlink then points at ``/dev/mapper/<name>``
(libvirt's XML uses that path), detach is idempotent, and ``extend_volume``
returns the decrypted size in bytes. The passphrase is os-brick's (the hex of
the key), so a volume moves between these and os-brick's own classes both
ways. The key never enters nova: the encryptor sends the key id, the
context's project and its token, and the daemon fetches the key.
"""
import hashlib
import os
import re

from os_brick.encryptors import base
from os_brick import exception

from portcullis_brick.client import DaemonClient
from portcullis_brick.client import DaemonUnreachable
from portcullis_brick.errors import error_from_answer
from portcullis_brick.errors import PortcullisError
from portcullis_brick.errors import PortcullisKeyError
from portcullis_brick.errors import PortcullisUnavailable

# What portcullisd accepts as a mapping name (src/luks/names.ts), iSCSI by-path names (':') included.
_NAME = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.:+-]{0,126}$')
DEFAULT_STATE_DIR = '/var/lib/nova/portcullis_brick'


class _PortcullisEncryptor(base.VolumeEncryptor):
    #: The daemon's provider: luks (LUKS1), luks2 or plain.
    provider = None

    def __init__(self, root_helper, connection_info, keymgr, execute=None, *args, **kwargs):
        super().__init__(root_helper=root_helper, connection_info=connection_info, keymgr=keymgr,
                         execute=execute, *args, **kwargs)
        data = connection_info.get('data') or {}
        # As os-brick: volumes without a host block device (RBD and NFS through libvirt) cannot be encrypted here.
        if not data.get('device_path'):
            raise exception.VolumeEncryptionNotSupported(
                volume_id=data.get('volume_id') or connection_info.get('serial'),
                volume_type=connection_info.get('driver_volume_type'))
        self.symlink_path = data['device_path']
        self.dev_name = 'crypt-%s' % os.path.basename(self.symlink_path)
        if not _NAME.match(self.dev_name):
            raise exception.InvalidParameterValue(
                err='portcullisd cannot name a mapping %r (from device_path %s): it takes 1-127 of '
                    'A-Z a-z 0-9 _ . : + -' % (self.dev_name, self.symlink_path))
        self._client = DaemonClient()
        self._state_dir = os.environ.get('PORTCULLIS_BRICK_STATE_DIR') or DEFAULT_STATE_DIR

    def _call(self, method, path, body=None):
        try:
            answer = self._client.request(method, path, body)
        except DaemonUnreachable as e:
            raise PortcullisUnavailable(str(e), 'E_DAEMON_UNREACHABLE')
        if answer.status // 100 != 2:
            raise error_from_answer(method, path, answer, device=self.symlink_path)
        return answer.body or {}

    def _key_fields(self, context):
        key_id = self.encryption_key_id
        if not key_id:
            raise PortcullisError('the volume\'s encryption metadata has no encryption_key_id', 'E_BAD_REQUEST')
        token = getattr(context, 'auth_token', None)
        project = getattr(context, 'project_id', None) or self._remembered_project(key_id)
        if not project:
            raise PortcullisKeyError('the request context carries no project, and no earlier attach on this '
                                     'host recorded one for key %s' % key_id, 'E_NO_PROJECT')
        fields = {'key': {'id': key_id}, 'project_id': project}
        if token:
            fields['auth'] = {'token': token}
        return fields

    def attach_volume(self, context, **kwargs):
        """Opens the volume as /dev/mapper/crypt-NAME and points device_path at it."""
        body = dict(self._key_fields(context), device=self.symlink_path, provider=self.provider,
                    format='if-blank', symlink=True)
        if kwargs.get('cipher'):
            body['cipher'] = kwargs['cipher']
        if kwargs.get('key_size'):
            body['key_size'] = int(kwargs['key_size'])
        self._call('PUT', '/v1/volumes/%s' % self.dev_name, body)
        self._remember_project(body['key']['id'], body['project_id'])

    def detach_volume(self, **kwargs):
        """Closes the mapping; closing one that is not there succeeds (as os-brick's exit 4)."""
        self._call('DELETE', '/v1/volumes/%s' % self.dev_name)

    def extend_volume(self, context, **kwargs):
        """Grows the mapping to its device's new size; returns the decrypted size in bytes."""
        answer = self._call('POST', '/v1/volumes/%s/resize' % self.dev_name, self._key_fields(context))
        return int(answer['size_bytes'])

    # nova's admin context (host boot, nova bug 1905701) has no project: the last attach's is remembered.
    # It is not an authority: portcullisd and the key manager decide whether the project may read the key.
    def _project_file(self, key_id):
        return os.path.join(self._state_dir, hashlib.sha256(key_id.encode('utf-8')).hexdigest())

    def _remembered_project(self, key_id):
        try:
            with open(self._project_file(key_id), encoding='utf-8') as f:
                return f.read().strip() or None
        except OSError:
            return None

    def _remember_project(self, key_id, project):
        path = self._project_file(key_id)
        try:
            os.makedirs(self._state_dir, mode=0o700, exist_ok=True)
            with open(path + '.tmp', 'w', encoding='utf-8') as f:
                f.write(project)
            os.replace(path + '.tmp', path)
        except OSError:
            pass  # only the host-boot case needs it, and that attach then says why it cannot proceed


class LuksEncryptor(_PortcullisEncryptor):
    """os-brick's LuksEncryptor through portcullisd: formats LUKS1; opens LUKS1 or LUKS2."""
    provider = 'luks'


class Luks2Encryptor(_PortcullisEncryptor):
    """os-brick's Luks2Encryptor through portcullisd: formats LUKS2."""
    provider = 'luks2'


class PlainEncryptor(_PortcullisEncryptor):
    """os-brick's CryptsetupEncryptor (plain dm-crypt) through portcullisd; it cannot be extended."""
    provider = 'plain'

    def extend_volume(self, context, **kwargs):
        raise NotImplementedError()
