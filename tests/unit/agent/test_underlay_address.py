"""The external interface's address followed (KernelFollower.follow_underlay_address) and the
move's refusal when another live host holds the new public IP (ConfigFollower.move_underlay):
pure logic on a stand-in kernel and the in-memory registry. The move itself, in namespaces with a
real etcd, is tests/agent/test_kernel_repairs.py's."""

import threading

from ansible_collections.netlab.flannel.plugins.module_utils.flannel import netlink
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.cli import parse_args
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.config_switching import InForce
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.daemon import Agent
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.kernel_following import KernelFollower
from test_event_handling import CONFIG, OWN, OWN_SUBNET, FakeRegistry, RecordingBackend, start_backend

ETH0 = netlink.Interface("eth0", 2, "192.168.205.10", 1500)


def _follower(monkeypatch, addresses, iface_flag=()):
    """A KernelFollower on eth0 at ETH0.address, whose kernel now lists `addresses` on eth0; the
    interfaces it hands on are collected in .moved."""
    in_force = InForce()
    moved = []
    follower = KernelFollower(in_force, None, None, threading.RLock(), on_underlay_moved=moved.append)
    follower.moved = moved
    monkeypatch.setattr(netlink, "select_interface", lambda ifaces, regexes: ETH0)
    follower.choose_interface(type("Options", (), {"iface": list(iface_flag), "iface_regex": []}))
    monkeypatch.setattr(netlink, "interface_addresses", lambda index: list(addresses) if index == 2 else [])
    return follower


def test_another_address_beside_the_one_in_use_changes_nothing(monkeypatch):
    follower = _follower(monkeypatch, ["192.168.205.10", "192.168.205.99"])
    follower.follow_underlay_address()
    assert follower.moved == []


def test_the_address_in_use_gone_hands_the_next_one_on(monkeypatch):
    follower = _follower(monkeypatch, ["192.168.205.20", "169.254.1.1"])
    follower.follow_underlay_address()
    assert follower.moved == [ETH0._replace(address="192.168.205.20")]


def test_no_address_left_is_waited_for_and_said_once(monkeypatch, caplog):
    follower = _follower(monkeypatch, [])
    follower.follow_underlay_address()
    follower.follow_underlay_address()
    assert follower.moved == []
    assert [record.getMessage() for record in caplog.records] == [
        "eth0 no longer holds 192.168.205.10, the address in use, and no other IPv4 address; the overlay cannot "
        "reach this host until it is back"]


def test_an_address_that_iface_names_is_kept_to(monkeypatch, caplog):
    follower = _follower(monkeypatch, ["192.168.205.20"], iface_flag=["192.168.205.10"])
    follower.follow_underlay_address()
    assert follower.moved == []
    assert "the address that -iface names" in caplog.text


def test_a_new_public_ip_another_live_host_holds_is_not_moved_to(tmp_path):
    registry = FakeRegistry()
    registry.claim_public_ip = lambda public_ip, host_id, ttl: "other-host" if public_ip == "192.168.205.20" else None
    options = parse_args(["-subnet-file=%s" % (tmp_path / "subnet.env"), "-host-id=test"], environ={})
    agent = Agent(options, registry, clock=lambda: 1000.0, wait=lambda seconds: False)
    start_backend(agent, RecordingBackend())
    agent.keeper.install(registry._store(OWN_SUBNET, OWN, 86400))
    agent.in_force.iface = ETH0
    backend = agent.in_force.backend
    assert agent.follower.move_underlay(ETH0._replace(address="192.168.205.20"), "192.168.205.20") is False
    assert agent.in_force.backend is backend and agent.in_force.iface == ETH0
    assert agent.keeper.attrs.public_ip == "192.168.205.10" and agent.in_force.config is CONFIG
    ok, reason = agent.health()
    assert not ok and reason.startswith("moving to eth0's address 192.168.205.20 (public IP 192.168.205.20): "
                                        "public IP 192.168.205.20 is already used by another live host (host id "
                                        "other-host, this host test)")
