"""Which socket the encryptors use."""
import os
import tempfile
import unittest

from portcullis_brick import client


class SocketTestCase(unittest.TestCase):
    def config(self, text):
        fd, path = tempfile.mkstemp(suffix='.yaml')
        with os.fdopen(fd, 'w') as f:
            f.write(text)
        self.addCleanup(os.unlink, path)
        return path

    def test_the_environment_wins(self):
        self.assertEqual(client.resolve_socket({'PORTCULLIS_SOCKET': '/x.sock', 'PORTCULLIS_CONFIG': '/nonexistent'}),
                         ('/x.sock', '$PORTCULLIS_SOCKET'))

    def test_then_socket_path_in_the_config(self):
        path = self.config('key_manager:\n  backend: local\n  path: /not/this\nsocket:\n  group: nova  # who\n  path: "/run/p/p.sock"\nlog:\n  path: /no\n')
        self.assertEqual(client.resolve_socket({'PORTCULLIS_CONFIG': path}), ('/run/p/p.sock', 'socket.path in %s' % path))

    def test_a_config_without_a_socket_path_means_the_default(self):
        path = self.config('socket:\n  group: nova\nlog:\n  path: /no\n')
        self.assertEqual(client.resolve_socket({'PORTCULLIS_CONFIG': path}), (client.DEFAULT_SOCKET, 'the default'))

    def test_no_config_means_the_default(self):
        self.assertEqual(client.resolve_socket({'PORTCULLIS_CONFIG': '/nonexistent.yaml'}), (client.DEFAULT_SOCKET, 'the default'))


if __name__ == '__main__':
    unittest.main()
