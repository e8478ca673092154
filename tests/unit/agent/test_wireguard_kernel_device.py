"""netlink.wireguard.KernelDevice's translation to and from pyroute2's WireGuard calls (this
machine's kernel has no wireguard module, so the genl family itself cannot be reached here): the
same WgPeer in, the same DeviceState out, as wireguard-go's control socket gives."""

import base64

from ansible_collections.netlab.flannel.plugins.module_utils.flannel.backends.wireguard_device import (
    DeviceState, WgPeer)
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.netlink import wireguard

KEY = base64.b64encode(bytes(range(1, 33))).decode()
PEER_KEY = base64.b64encode(bytes(range(2, 34))).decode()


class Attrs(dict):
    """A netlink message as pyroute2 decodes it: get_attr by name."""

    def get_attr(self, name):
        return self.get(name)


class FakeWireGuard:
    def __init__(self, messages=()):
        self.messages, self.calls, self.closed = list(messages), [], False

    def info(self, name):
        self.calls.append(("info", name))
        return self.messages

    def set(self, name, **arguments):
        self.calls.append(("set", name, arguments))

    def close(self):
        self.closed = True


def test_configure_sends_key_port_removals_and_each_peer(monkeypatch):
    fake = FakeWireGuard()
    monkeypatch.setattr(wireguard.KernelDevice, "_socket", lambda self: fake)
    peer = WgPeer(PEER_KEY, "192.0.2.7:51820", ("10.1.0.0/24",), 25, None)
    wireguard.KernelDevice("flannel-wg").configure(KEY, 51820, [peer], [KEY])
    assert fake.calls == [
        ("set", "flannel-wg", {"private_key": KEY, "listen_port": 51820}),
        ("set", "flannel-wg", {"peer": {"public_key": KEY, "remove": True}}),
        ("set", "flannel-wg", {"peer": {"public_key": PEER_KEY, "endpoint_addr": "192.0.2.7", "endpoint_port": 51820,
                                        "preshared_key": wireguard.ZERO_KEY, "persistent_keepalive": 25,
                                        "replace_allowed_ips": True, "allowed_ips": ["10.1.0.0/24"]}})]
    assert fake.closed


def test_open_session_turns_the_keepalive_on_then_back(monkeypatch):
    fake = FakeWireGuard()
    monkeypatch.setattr(wireguard.KernelDevice, "_socket", lambda self: fake)
    wireguard.KernelDevice("flannel-wg").open_session(PEER_KEY, 0)
    assert fake.calls == [("set", "flannel-wg", {"peer": {"public_key": PEER_KEY, "persistent_keepalive": 1}}),
                          ("set", "flannel-wg", {"peer": {"public_key": PEER_KEY, "persistent_keepalive": 0}})]
    assert fake.closed


def test_state_reads_peers_across_messages(monkeypatch):
    first = Attrs(WGDEVICE_A_PRIVATE_KEY={"value": KEY.encode()}, WGDEVICE_A_LISTEN_PORT=51820, WGDEVICE_A_PEERS=[
        Attrs(WGPEER_A_PUBLIC_KEY={"value": PEER_KEY.encode()}, WGPEER_A_ENDPOINT={"addr": "192.0.2.7", "port": 51820},
              WGPEER_A_PRESHARED_KEY={"value": wireguard.ZERO_KEY.encode()}, WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL=25,
              WGPEER_A_LAST_HANDSHAKE_TIME={"tv_sec": 1700000000, "tv_nsec": 0},
              WGPEER_A_ALLOWEDIPS=[{"addr": "10.1.0.0/24"}])])
    second = Attrs(WGDEVICE_A_PEERS=[Attrs(WGPEER_A_PUBLIC_KEY={"value": PEER_KEY.encode()},
                                           WGPEER_A_ALLOWEDIPS=[{"addr": "10.2.0.0/24"}])])
    fake = FakeWireGuard([first, second])
    monkeypatch.setattr(wireguard.KernelDevice, "_socket", lambda self: fake)
    state = wireguard.KernelDevice("flannel-wg").state()
    assert state == DeviceState(KEY, 51820, {PEER_KEY: WgPeer(PEER_KEY, "192.0.2.7:51820", ("10.1.0.0/24", "10.2.0.0/24"),
                                                              25, None)}, {PEER_KEY: 1700000000})
