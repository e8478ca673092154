"""The WireGuard device as the backend sees it, whoever implements it: what it is told (WgPeer,
the private key, the listen port) and what it answers (DeviceState; both types defined beside
the kernel's implementation, netlink.wireguard.KernelDevice, which the netlink layer cannot import
from here), the same for the kernel module and for wireguard-go (UapiDevice here, speaking the
userspace control protocol `wg` speaks over /var/run/wireguard/<device>.sock).

Both take one call, configure(private_key, listen_port, peers, removed): the key and port when not
None (setting them again would make wireguard-go rebind its socket), the peers in `peers` set
(their allowed IPs replaced), the public keys in `removed` removed, nothing else touched; and
open_session(public_key, keepalive): persistent keepalive turned on, which sends a keepalive at
once (a handshake first when the peer has no session), then set back to `keepalive`.
"""

import errno
import os
import socket
import subprocess

from ..netlink.wireguard import DeviceError, DeviceState, WgPeer
from .wireguard_keys import base64_key, hex_key

SOCKET_DIRECTORY = "/var/run/wireguard"
WIREGUARD_GO = "wireguard-go"
REPLY_LIMIT = 1 << 20  # a device answer larger than this is not wireguard-go's


def socket_path(device):
    return os.path.join(SOCKET_DIRECTORY, device + ".sock")


def _peer_lines(peer, removed=False):
    lines = ["public_key=" + hex_key(peer.public_key)]
    if removed:
        return lines + ["remove=true"]
    lines += ["preshared_key=" + (hex_key(peer.psk) if peer.psk else "0" * 64),
              "endpoint=" + peer.endpoint,
              "persistent_keepalive_interval=%d" % peer.keepalive,
              "replace_allowed_ips=true"]
    return lines + ["allowed_ip=" + allowed for allowed in peer.allowed_ips]


def set_request(private_key, listen_port, peers, removed):
    """The UAPI 'set' request (text) for configure()'s arguments."""
    lines = ["set=1"]
    if private_key is not None:
        lines.append("private_key=" + hex_key(private_key))
    if listen_port is not None:
        lines.append("listen_port=%d" % listen_port)
    for public_key in removed:
        lines += _peer_lines(WgPeer(public_key, None, (), 0, None), removed=True)
    for peer in peers:
        lines += _peer_lines(peer)
    return "\n".join(lines) + "\n\n"


def open_session_request(public_key, keepalive):
    """The UAPI 'set' request of open_session(): the peer's keepalive turned on (wireguard-go sends
    one at once when it goes from 0 to on), then back to `keepalive`, in one request."""
    peer = "public_key=" + hex_key(public_key)
    return "set=1\n%s\npersistent_keepalive_interval=1\n%s\npersistent_keepalive_interval=%d\n\n" % (
        peer, peer, keepalive)


def parse_get_reply(text):
    """A DeviceState from a UAPI 'get' answer; DeviceError for errno != 0."""
    private_key, listen_port, status = None, 0, None
    peers, handshakes, current = {}, {}, None
    for line in text.split("\n"):
        if not line:
            continue
        key, value = line.partition("=")[::2]
        if key == "errno":
            status = int(value)
        elif key == "private_key":
            private_key = base64_key(value)
        elif key == "listen_port":
            listen_port = int(value)
        elif key == "public_key":
            current = base64_key(value)
            peers[current] = WgPeer(current, None, (), 0, None)
            handshakes[current] = 0
        elif current is None:
            continue
        elif key == "endpoint":
            peers[current] = peers[current]._replace(endpoint=value)
        elif key == "allowed_ip":
            peers[current] = peers[current]._replace(allowed_ips=peers[current].allowed_ips + (value,))
        elif key == "persistent_keepalive_interval":
            peers[current] = peers[current]._replace(keepalive=int(value))
        elif key == "preshared_key":
            peers[current] = peers[current]._replace(psk=None if set(value) == {"0"} else base64_key(value))
        elif key == "last_handshake_time_sec":
            handshakes[current] = int(value)
    if status:
        raise DeviceError("the device refused get: errno %d (%s)" % (status, os.strerror(status)))
    return DeviceState(private_key, listen_port, peers, handshakes)


class UapiDevice:
    """wireguard-go's device `name`, configured through its control socket."""

    implementation = "wireguard-go"

    def __init__(self, name, timeout=5.0):
        self.name = name
        self.path = socket_path(name)
        self.timeout = timeout

    def _exchange(self, request):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
            sock.sendall(request.encode("ascii"))
            reply = b""
            while not reply.endswith(b"\n\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                reply += chunk
                if len(reply) > REPLY_LIMIT:
                    raise DeviceError("%s answered more than %d bytes" % (self.path, REPLY_LIMIT))
        except OSError as error:
            raise DeviceError("cannot talk to wireguard-go at %s: %s" % (self.path, error.strerror or error))
        finally:
            sock.close()
        return reply.decode("ascii", "replace")

    def answers(self):
        """Whether a wireguard-go answers on the socket."""
        try:
            self.state()
            return True
        except DeviceError:
            return False

    def state(self):
        return parse_get_reply(self._exchange("get=1\n\n"))

    def configure(self, private_key, listen_port, peers=(), removed=()):
        self._set(set_request(private_key, listen_port, peers, removed))

    def open_session(self, public_key, keepalive):
        self._set(open_session_request(public_key, keepalive))

    def _set(self, request):
        reply = self._exchange(request)
        status = dict(line.partition("=")[::2] for line in reply.split("\n") if line).get("errno")
        if status != "0":
            code = int(status) if status and status.isdigit() else None
            raise DeviceError("wireguard-go refused the configuration of %s: errno %s%s" % (
                self.name, status, " (%s)" % os.strerror(code) if code else ""))


def start_wireguard_go(name):
    """Start wireguard-go for device `name`: it creates the TUN device and the control socket,
    then detaches, so the data plane outlives this agent (a restarted agent finds it running)."""
    if os.path.exists(socket_path(name)):  # a dead instance's socket: wireguard-go refuses to start
        try:
            os.unlink(socket_path(name))
        except OSError:
            pass
    environment = dict(os.environ, WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD="1")
    environment.pop("WG_PROCESS_FOREGROUND", None)
    try:
        result = subprocess.run([WIREGUARD_GO, name], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, env=environment, timeout=30, check=False)
    except FileNotFoundError:
        raise DeviceError("wireguard-go is not installed (the kernel has no wireguard module either): "
                          "install the wireguard-go package")
    except (OSError, subprocess.TimeoutExpired) as error:
        raise DeviceError("cannot run wireguard-go: %s" % error)
    if result.returncode != 0:
        output = result.stdout.decode("utf-8", "replace").strip().splitlines()
        raise DeviceError("wireguard-go %s exited with status %d: %s" % (
            name, result.returncode, " / ".join(output[-3:]) or "no output"))


def is_missing_kind(error):
    """Whether a link creation failed because the kernel does not know the kind (no module)."""
    return getattr(error, "code", None) in (errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL)
