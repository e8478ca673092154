"""The kernel's WireGuard device (link kind `wireguard`), configured over generic netlink
(pyroute2's WireGuard): the same configure()/state() as wireguard-go's control socket
(backends/wireguard_device.UapiDevice), so the backend has one configuration path for both; the
types both implementations take and answer (WgPeer, DeviceState, DeviceError) are defined here.

Only used where the kernel has the wireguard module; the backend falls back to wireguard-go when
creating the link fails (create_wireguard raises NetlinkError: EOPNOTSUPP, 'Unknown device type').
"""

import base64
import collections

from . import optional_ipr
from .links import link_index

ZERO_KEY = base64.b64encode(bytes(32)).decode("ascii")
# endpoint "ip:port", allowed_ips a tuple of CIDRs, keepalive seconds (0 off), psk base64 or None.
WgPeer = collections.namedtuple("WgPeer", "public_key endpoint allowed_ips keepalive psk")
# peers {public key: WgPeer}; handshakes {public key: unix time of the last handshake, 0 never}.
DeviceState = collections.namedtuple("DeviceState", "private_key listen_port peers handshakes")


class DeviceError(Exception):
    """The WireGuard device refused or did not answer; the message says which and why."""


@optional_ipr
def create_wireguard(name, mtu, ipr=None):
    """Create a kernel WireGuard link (down); returns its index."""
    ipr.link("add", ifname=name, kind="wireguard", mtu=mtu)
    return link_index(name, ipr)


def _text(value):
    return value.decode("ascii") if isinstance(value, bytes) else value


class KernelDevice:
    """The kernel's WireGuard device `name` in this process's network namespace."""

    implementation = "kernel"

    def __init__(self, name):
        self.name = name

    def _socket(self):
        from pyroute2 import WireGuard  # imported here: only this path needs the genl family

        return WireGuard()

    def state(self):
        wireguard = self._socket()
        try:
            messages = list(wireguard.info(self.name))
        except Exception as error:
            raise DeviceError("cannot read the kernel WireGuard device %s: %s" % (self.name, error))
        finally:
            wireguard.close()
        private_key, listen_port, peers, handshakes = None, 0, {}, {}
        for message in messages:  # a device with many peers comes in several messages
            private = message.get_attr("WGDEVICE_A_PRIVATE_KEY")
            private_key = _text(private["value"]) if private else private_key
            listen_port = message.get_attr("WGDEVICE_A_LISTEN_PORT") or listen_port
            for peer in message.get_attr("WGDEVICE_A_PEERS") or ():
                key = _text(peer.get_attr("WGPEER_A_PUBLIC_KEY")["value"])
                endpoint = peer.get_attr("WGPEER_A_ENDPOINT")
                psk = peer.get_attr("WGPEER_A_PRESHARED_KEY")
                keepalive = peer.get_attr("WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL")
                allowed = tuple(entry["addr"] for entry in peer.get_attr("WGPEER_A_ALLOWEDIPS") or ())
                # A peer with many allowed IPs continues in the next message, with its key and
                # allowed IPs only: what that message lacks is the first one's.
                old = peers.get(key, WgPeer(key, None, (), 0, None))
                peers[key] = WgPeer(key, "%s:%d" % (endpoint["addr"], endpoint["port"]) if endpoint else old.endpoint,
                                    old.allowed_ips + allowed, old.keepalive if keepalive is None else keepalive,
                                    old.psk if psk is None else (None if _text(psk["value"]) == ZERO_KEY
                                                                 else _text(psk["value"])))
                handshake = peer.get_attr("WGPEER_A_LAST_HANDSHAKE_TIME")
                handshakes[key] = handshake["tv_sec"] if handshake else handshakes.get(key, 0)
        return DeviceState(private_key, listen_port, peers, handshakes)

    def configure(self, private_key, listen_port, peers=(), removed=()):
        wireguard = self._socket()
        try:
            if private_key is not None or listen_port is not None:
                wireguard.set(self.name, private_key=private_key, listen_port=listen_port)
            for public_key in removed:
                wireguard.set(self.name, peer={"public_key": public_key, "remove": True})
            for peer in peers:
                address, port = peer.endpoint.rsplit(":", 1)
                wireguard.set(self.name, peer={
                    "public_key": peer.public_key, "endpoint_addr": address, "endpoint_port": int(port),
                    "preshared_key": peer.psk or ZERO_KEY, "persistent_keepalive": peer.keepalive,
                    "replace_allowed_ips": True, "allowed_ips": list(peer.allowed_ips)})
        except Exception as error:
            raise DeviceError("the kernel refused the configuration of %s: %s" % (self.name, error))
        finally:
            wireguard.close()

    def open_session(self, public_key, keepalive):
        """Persistent keepalive on (the kernel sends a keepalive at once when it goes from 0 to
        on, a handshake first without a session), then back to `keepalive`."""
        wireguard = self._socket()
        try:
            for interval in (1, keepalive):
                wireguard.set(self.name, peer={"public_key": public_key, "persistent_keepalive": interval})
        except Exception as error:
            raise DeviceError("the kernel refused a keepalive to a peer of %s: %s" % (self.name, error))
        finally:
            wireguard.close()
