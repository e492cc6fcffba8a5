"""The daemon's errors arrive as os-brick's exception types, with the daemon's code and message."""
import os
import unittest
from unittest import mock

from oslo_concurrency import processutils
from os_brick import encryptors
from os_brick import exception

from portcullis_brick import errors
from tests.fake_daemon import FakeDaemon
from tests.test_encryptors import Context, KEY_ID, connection


class ErrorTestCase(unittest.TestCase):
    def setUp(self):
        self.daemon = FakeDaemon()
        patcher = mock.patch.dict(os.environ, {'PORTCULLIS_SOCKET': self.daemon.socket_path})
        patcher.start()
        self.addCleanup(patcher.stop)
        self.addCleanup(self.daemon.stop)
        self.metadata = dict(encryption_key_id=KEY_ID, control_location='front-end',
                             provider='portcullis_brick.Luks2Encryptor')
        self.encryptor = encryptors.get_volume_encryptor(None, connection(), None, None, **self.metadata)

    def attach_fails(self, status, code, message):
        self.daemon.error(status, code, message)
        with self.assertRaises(Exception) as caught:
            self.encryptor.attach_volume(Context(), **self.metadata)
        self.assertIn(code, str(caught.exception))
        self.assertIn(message, str(caught.exception))
        self.assertEqual(caught.exception.error_code, code)
        self.assertEqual(caught.exception.status, status)
        return caught.exception

    def test_a_wrong_key_is_cryptsetups_exit_2(self):
        err = self.attach_fails(422, 'E_WRONG_KEY', 'No keyslot opens with this key')
        self.assertIsInstance(err, processutils.ProcessExecutionError)
        self.assertEqual(err.exit_code, 2)

    def test_a_held_mapping_is_cryptsetups_exit_5(self):
        self.daemon.error(409, 'E_VOLUME_BUSY', 'held open by 1 holder')
        with self.assertRaises(processutils.ProcessExecutionError) as caught:
            self.encryptor.detach_volume(**self.metadata)
        self.assertEqual(caught.exception.exit_code, 5)

    def test_a_device_that_is_not_blank_is_a_command_failure_naming_why(self):
        err = self.attach_fails(422, 'E_DEVICE_NOT_BLANK', 'ext4 signature at offset 1080')
        self.assertIsInstance(err, processutils.ProcessExecutionError)

    def test_a_missing_device_is_os_bricks_device_not_found(self):
        err = self.attach_fails(422, 'E_DEVICE_NOT_FOUND', 'No block device at /dev/disk/by-id/virtio-vol-3f2a')
        self.assertIsInstance(err, exception.VolumeDeviceNotFound)

    def test_key_manager_refusals_are_brick_exceptions_of_their_own(self):
        for status, code in [(403, 'E_KEY_FORBIDDEN'), (404, 'E_KEY_NOT_FOUND'), (503, 'E_BACKEND_UNAVAILABLE')]:
            err = self.attach_fails(status, code, 'Barbican said so')
            self.assertIsInstance(err, errors.PortcullisKeyError)
            self.assertIsInstance(err, exception.BrickException)

    def test_other_refusals_keep_their_code(self):
        err = self.attach_fails(409, 'E_MAPPING_CONFLICT', 'open for another project')
        self.assertIs(type(err), errors.PortcullisError)

    def test_an_answer_without_an_error_body_is_a_protocol_error(self):
        self.daemon.answer = (500, 'oops')
        with self.assertRaises(errors.PortcullisError) as caught:
            self.encryptor.attach_volume(Context(), **self.metadata)
        self.assertEqual(caught.exception.error_code, 'E_DAEMON_PROTOCOL')

    def test_no_daemon_is_unavailable_naming_the_socket(self):
        self.daemon.stop()
        os.unlink(self.daemon.socket_path)
        with self.assertRaises(errors.PortcullisUnavailable) as caught:
            self.encryptor.attach_volume(Context(), **self.metadata)
        self.assertIn(self.daemon.socket_path, str(caught.exception))
        self.assertIn('$PORTCULLIS_SOCKET', str(caught.exception))


if __name__ == '__main__':
    unittest.main()
