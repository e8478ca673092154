"""WireGuard keys: the private key file the agent keeps across restarts, the public key derived
from it (X25519, RFC 7748, so that no `wg` binary nor crypto library is needed), and the check of
a key read from someone else's lease.

Keys travel as WireGuard writes them: standard base64 of 32 bytes (44 characters ending in '=').
"""

import base64
import binascii
import os
import re

KEY_BYTES = 32
_BASE64_KEY = re.compile(r"^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=\Z")  # the last 2 bits must be zero
_P = 2 ** 255 - 19
_A24 = 121665
_BASE_POINT = 9


def key_problem(text):
    """Why `text` is not a WireGuard key (base64 of 32 bytes, not all zero), or None."""
    if not isinstance(text, str) or not _BASE64_KEY.match(text):
        shown = repr(text)[:60]
        return "%s is not a WireGuard key (base64 of 32 bytes, 44 characters)" % shown
    if base64.b64decode(text) == bytes(KEY_BYTES):
        return "the all-zero key is not a WireGuard key"
    return None


def lease_key_and_port(backend_data):
    """(PublicKey, Port) of a wireguard lease's BackendData as read (keys matched without case, as
    Go's encoding/json does); (None, None) when it is not an object."""
    if not isinstance(backend_data, dict):
        return None, None
    given = dict((str(key).lower(), value) for key, value in backend_data.items())
    return given.get("publickey"), given.get("port")


def _clamped_scalar(private):
    scalar = bytearray(private)
    scalar[0] &= 248
    scalar[31] &= 127
    scalar[31] |= 64
    return int.from_bytes(bytes(scalar), "little")


def _x25519(scalar, u_coordinate):
    """The Montgomery ladder of RFC 7748 section 5 (constant time is not needed: it runs once, on
    this host's own key, at start-up)."""
    x_1, x_2, z_2, x_3, z_3 = u_coordinate, 1, 0, u_coordinate, 1
    swap = 0
    for bit_index in range(254, -1, -1):
        bit = (scalar >> bit_index) & 1
        if swap ^ bit:
            x_2, x_3, z_2, z_3 = x_3, x_2, z_3, z_2
        swap = bit
        sum_2, diff_2 = (x_2 + z_2) % _P, (x_2 - z_2) % _P
        sum_3, diff_3 = (x_3 + z_3) % _P, (x_3 - z_3) % _P
        square_sum, square_diff = sum_2 * sum_2 % _P, diff_2 * diff_2 % _P
        cross_a, cross_b = diff_3 * sum_2 % _P, sum_3 * diff_2 % _P
        x_3 = (cross_a + cross_b) ** 2 % _P
        z_3 = x_1 * (cross_a - cross_b) ** 2 % _P
        x_2 = square_sum * square_diff % _P
        gap = (square_sum - square_diff) % _P
        z_2 = gap * (square_sum + _A24 * gap) % _P
    if swap:
        x_2, z_2 = x_3, z_3
    return x_2 * pow(z_2, _P - 2, _P) % _P


def public_key(private_key):
    """The base64 public key of a base64 private key."""
    scalar = _clamped_scalar(base64.b64decode(private_key))
    return base64.b64encode(_x25519(scalar, _BASE_POINT).to_bytes(KEY_BYTES, "little")).decode("ascii")


def new_private_key():
    """A fresh base64 private key, clamped as `wg genkey` writes it."""
    raw = bytearray(os.urandom(KEY_BYTES))
    raw[0] &= 248
    raw[31] = (raw[31] & 127) | 64
    return base64.b64encode(bytes(raw)).decode("ascii")


class KeyFileError(Exception):
    """The key file cannot be read or written; the message names it."""


def load_or_create_private_key(path):
    """(private key, created): the key in `path`, or a new one written there (mode 0600, its
    directory created 0700 when missing). A file that holds no key is an error, never replaced: it
    may be the operator's, and replacing it would change this host's identity behind their back."""
    try:
        with open(path) as handle:
            text = handle.read(200).strip()
    except FileNotFoundError:
        text = None
    except OSError as error:
        raise KeyFileError("cannot read the WireGuard key file %s: %s" % (path, error.strerror or error))
    if text is not None:
        if key_problem(text):
            raise KeyFileError("the WireGuard key file %s holds no private key (base64 of 32 bytes); "
                               "delete it to have a new key generated" % path)
        try:
            if os.stat(path).st_mode & 0o077:
                os.chmod(path, 0o600)  # a private key readable by others is no longer private
        except OSError as error:
            raise KeyFileError("cannot make %s private (mode 0600): %s" % (path, error.strerror or error))
        return text, False
    key = new_private_key()
    directory = os.path.dirname(path) or "."
    temporary = "%s.%d.tmp" % (path, os.getpid())
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(key + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(temporary, path)  # a crash never leaves half a key behind
    except OSError as error:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise KeyFileError("cannot write the WireGuard key file %s: %s" % (path, error.strerror or error))
    return key, True


def hex_key(key):
    """A base64 key as the UAPI spells it (64 hex digits)."""
    return binascii.hexlify(base64.b64decode(key)).decode("ascii")


def base64_key(hex_text):
    """A UAPI hex key in base64."""
    return base64.b64encode(binascii.unhexlify(hex_text)).decode("ascii")
