"""os-brick volume encryptors backed by portcullisd.

nova reaches an encryptor through ``os_brick.encryptors.get_volume_encryptor``,
which imports any provider string that is not ``luks``/``luks2``/``plain`` as
a class path. A volume type whose encryption provider is
``portcullis_brick.Luks2Encryptor`` (or ``LuksEncryptor``, ``PlainEncryptor``)
therefore runs these classes inside an unmodified nova-compute; they ask
portcullisd over its unix socket to do what os-brick's own classes do with
cryptsetup. See docs/nova.md.
"""
from portcullis_brick.encryptors import Luks2Encryptor
from portcullis_brick.encryptors import LuksEncryptor
from portcullis_brick.encryptors import PlainEncryptor
from portcullis_brick.errors import PortcullisError

__all__ = ['LuksEncryptor', 'Luks2Encryptor', 'PlainEncryptor', 'PortcullisError']
