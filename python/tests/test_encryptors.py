"""portcullis_brick's encryptors as nova reaches them, against a stand-in daemon."""
import os
import shutil
import tempfile
import unittest
from unittest import mock

from oslo_concurrency import processutils
from os_brick import encryptors
from os_brick import exception

import portcullis_brick
from portcullis_brick import errors
from tests.fake_daemon import FakeDaemon

KEY_ID = '5b3c9f1e-93a4-4a5e-9a7e-0c1d2e3f4a5b'
DEVICE = '/dev/disk/by-id/virtio-vol-3f2a'


class Context(object):
    def __init__(self, project_id='proj-a', auth_token='tok-1'):
        self.project_id = project_id
        self.auth_token = auth_token


def connection(device_path=DEVICE):
    data = {'volume_id': 'vol-3f2a'}
    if device_path is not None:
        data['device_path'] = device_path
    return {'driver_volume_type': 'iscsi', 'data': data}


class EncryptorTestCase(unittest.TestCase):
    def setUp(self):
        self.daemon = FakeDaemon()
        self.state = tempfile.mkdtemp(prefix='portcullis-brick-state-')
        env = {'PORTCULLIS_SOCKET': self.daemon.socket_path, 'PORTCULLIS_BRICK_STATE_DIR': self.state}
        patcher = mock.patch.dict(os.environ, env)
        patcher.start()
        self.addCleanup(patcher.stop)
        self.addCleanup(self.daemon.stop)
        self.addCleanup(shutil.rmtree, self.state, True)

    def encryptor(self, provider='portcullis_brick.Luks2Encryptor', conn=None, **extra):
        # Exactly as nova's libvirt driver: root helper, connection_info, key manager, execute, **encryption.
        metadata = dict(encryption_key_id=KEY_ID, control_location='front-end', cipher='aes-xts-plain64',
                        key_size=512, provider=provider, **extra)
        return encryptors.get_volume_encryptor('sudo nova-rootwrap', conn or connection(), None, None, **metadata), metadata

    def test_get_volume_encryptor_imports_each_class_by_its_path(self):
        for name, cls in [('LuksEncryptor', portcullis_brick.LuksEncryptor),
                          ('Luks2Encryptor', portcullis_brick.Luks2Encryptor),
                          ('PlainEncryptor', portcullis_brick.PlainEncryptor)]:
            encryptor, _ = self.encryptor('portcullis_brick.%s' % name)
            self.assertIs(type(encryptor), cls)

    def test_attach_sends_what_the_daemon_needs_and_never_a_key(self):
        encryptor, metadata = self.encryptor()
        encryptor.attach_volume(Context(), **metadata)
        self.assertEqual(self.daemon.requests, [(
            'PUT', '/v1/volumes/crypt-virtio-vol-3f2a',
            {'device': DEVICE, 'provider': 'luks2', 'key': {'id': KEY_ID}, 'project_id': 'proj-a',
             'auth': {'token': 'tok-1'}, 'format': 'if-blank', 'symlink': True,
             'cipher': 'aes-xts-plain64', 'key_size': 512})])

    def test_each_class_names_its_own_provider(self):
        for name, provider in [('LuksEncryptor', 'luks'), ('Luks2Encryptor', 'luks2'), ('PlainEncryptor', 'plain')]:
            self.daemon.requests.clear()
            encryptor, metadata = self.encryptor('portcullis_brick.%s' % name)
            encryptor.attach_volume(Context(), **metadata)
            self.assertEqual(self.daemon.requests[0][2]['provider'], provider)

    def test_a_context_without_a_token_sends_no_auth(self):
        encryptor, metadata = self.encryptor()
        encryptor.attach_volume(Context(auth_token=None), **metadata)
        self.assertNotIn('auth', self.daemon.requests[0][2])

    def test_an_admin_context_without_a_project_uses_the_last_attachs(self):
        encryptor, metadata = self.encryptor()
        encryptor.attach_volume(Context(), **metadata)
        encryptor.attach_volume(Context(project_id=None, auth_token=None), **metadata)
        self.assertEqual(self.daemon.requests[1][2]['project_id'], 'proj-a')

    def test_an_admin_context_with_no_project_known_is_refused_before_sending(self):
        encryptor, metadata = self.encryptor()
        with self.assertRaises(errors.PortcullisKeyError) as caught:
            encryptor.attach_volume(Context(project_id=None, auth_token=None), **metadata)
        self.assertEqual(caught.exception.error_code, 'E_NO_PROJECT')
        self.assertEqual(self.daemon.requests, [])

    def test_no_device_path_is_os_bricks_not_supported(self):
        with self.assertRaises(exception.VolumeEncryptionNotSupported):
            self.encryptor(conn=connection(device_path=None))

    def test_a_name_the_daemon_cannot_take_is_refused_up_front(self):
        with self.assertRaises(exception.InvalidParameterValue):
            self.encryptor(conn=connection('/dev/disk/by-id/wwn-0x5000 with space'))

    def test_an_iscsi_by_path_name_is_taken_as_os_brick_names_it(self):
        encryptor, _ = self.encryptor(conn=connection('/dev/disk/by-path/ip-10.0.0.1:3260-iscsi-iqn.2010-10.org.openstack:volume-1-lun-1'))
        self.assertEqual(encryptor.dev_name, 'crypt-ip-10.0.0.1:3260-iscsi-iqn.2010-10.org.openstack:volume-1-lun-1')

    def test_detach_deletes_the_mapping_and_closing_nothing_succeeds(self):
        encryptor, metadata = self.encryptor()
        self.daemon.answer = (200, {'name': 'crypt-virtio-vol-3f2a', 'closed': False, 'deferred': False})
        encryptor.detach_volume(**metadata)
        encryptor.detach_volume(**metadata)
        self.assertEqual([r[:2] for r in self.daemon.requests], [('DELETE', '/v1/volumes/crypt-virtio-vol-3f2a')] * 2)

    def test_extend_returns_the_decrypted_size(self):
        encryptor, metadata = self.encryptor()
        self.daemon.answer = (200, {'name': 'crypt-virtio-vol-3f2a', 'size_bytes': 24117248})
        self.assertEqual(encryptor.extend_volume(Context(), **metadata), 24117248)
        self.assertEqual(self.daemon.requests, [(
            'POST', '/v1/volumes/crypt-virtio-vol-3f2a/resize',
            {'key': {'id': KEY_ID}, 'project_id': 'proj-a', 'auth': {'token': 'tok-1'}})])

    def test_plain_cannot_be_extended_as_in_os_brick(self):
        encryptor, metadata = self.encryptor('portcullis_brick.PlainEncryptor')
        with self.assertRaises(NotImplementedError):
            encryptor.extend_volume(Context(), **metadata)


if __name__ == '__main__':
    unittest.main()
