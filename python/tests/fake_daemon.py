"""A stand-in portcullisd on a unix socket: records each request, answers from a script."""
import http.server
import json
import os
import socketserver
import tempfile
import threading


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class FakeDaemon(object):
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix='portcullis-brick-test-')
        self.socket_path = os.path.join(self.dir, 'portcullis.sock')
        self.requests = []
        # (status, body) answered to every request until changed.
        self.answer = (200, {})
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _serve(self):
                length = int(self.headers.get('Content-Length') or 0)
                raw = self.rfile.read(length) if length else b''
                fake.requests.append((self.command, self.path, json.loads(raw) if raw else None))
                status, body = fake.answer
                data = json.dumps(body).encode('utf-8')
                self.send_response(status)
                self.send_header('Content-Type', 'application/json')
                self.send_header('Content-Length', str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_PUT = do_POST = do_DELETE = do_GET = _serve

            def address_string(self):
                return 'unix'

            def log_message(self, *args):
                pass

        self._server = _Server(self.socket_path, Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def error(self, status, code, message, details=None):
        self.answer = (status, {'error': {'code': code, 'message': message, 'details': details or {}}})

    def stop(self):
        self._server.shutdown()
        self._server.server_close()
