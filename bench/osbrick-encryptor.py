"""os-brick's own encryptors, driven the way nova drives them, for bench/vm-attach.ts.

One long-lived Python process (this one) per scenario: for each device,
get_volume_encryptor(...).attach_volume() on a fresh device (format + open),
detach_volume(), then attach_volume() again (open only) and detach_volume().
The key manager is a stub whose get() returns an object with get_encoded(),
as Castellan's would. Reads its job as JSON on stdin (the key travels there,
never in argv) and prints one JSON object of timings in milliseconds.
Run with Debian's /usr/bin/python3 as root, beside the kernel.
"""
import json
import os
import sys
import time

from oslo_concurrency import processutils
from os_brick.encryptors import get_volume_encryptor


class _Key:
    def __init__(self, encoded):
        self._encoded = encoded

    def get_encoded(self):
        return self._encoded


class _KeyManager:
    def __init__(self, key):
        self._key = key

    def get(self, context, key_id, **kwargs):
        return _Key(self._key)


def _point(link, target):
    # nova's connector leaves device_path as a symlink to the disk; attach_volume repoints it.
    if os.path.lexists(link):
        os.unlink(link)
    os.symlink(target, link)


def main():
    job = json.loads(sys.stdin.read())
    keymgr = _KeyManager(bytes.fromhex(job['key_hex']))
    os.makedirs(job['link_dir'], exist_ok=True)
    out = {'first': [], 'reattach': [], 'detach': []}
    for i, dev in enumerate(job['devices']):
        link = os.path.join(job['link_dir'], 'bench-%s-%d' % (job['provider'], i))
        for kind in ('first', 'reattach'):
            _point(link, dev)
            encryptor = get_volume_encryptor(
                root_helper='env', connection_info={'data': {'device_path': link}},
                keymgr=keymgr, execute=processutils.execute,
                provider=job['provider'], control_location='front-end',
                encryption_key_id='bench', cipher='aes-xts-plain64', key_size=256)
            started = time.perf_counter()
            encryptor.attach_volume(None)
            out[kind].append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            encryptor.detach_volume()
            out['detach'].append((time.perf_counter() - started) * 1000)
        os.unlink(link)
    print(json.dumps(out))


if __name__ == '__main__':
    main()
