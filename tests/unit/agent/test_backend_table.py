"""The backends' one table (backends.BACKENDS) and the typed changes they return: an unknown type
is an error naming the known ones, the config's rules come from the table, and a backend's
changes carry their kind (the kernel tables are test_lease_properties.FakeKernel's dicts)."""

import pickle
import types

import pytest
from netaddr import IPNetwork
from test_lease_properties import PUBLIC_IP, VXLAN, FakeKernel

from ansible_collections.netlab.flannel.plugins.module_utils.flannel import changes, config, metrics
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.backends import (BACKENDS, BackendFlags, backend_class,
                                                                                      make_backend)
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.backends.base import BackendError
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.backends.route_backend import RouteBackend
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.backends.vxlan import VxlanBackend
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.lease import Lease, LeaseAttrs

IFACE = ("eth0", 2, PUBLIC_IP, 1500)


def test_an_unknown_backend_type_is_an_error_listing_the_known_ones():
    unknown = types.SimpleNamespace(backend=types.SimpleNamespace(type="ipip"))
    with pytest.raises(BackendError) as error:
        make_backend(unknown, IFACE, PUBLIC_IP, BackendFlags("auto"))
    assert str(error.value) == "unknown backend type 'ipip'; the known ones: vxlan, host-gw, udp, wireguard, extension, alloc"


def test_every_registered_backend_is_a_class_of_its_name_and_the_config_accepts_its_keys():
    assert config.SUPPORTED_BACKENDS == tuple(BACKENDS) == ("vxlan", "host-gw", "udp", "wireguard", "extension", "alloc")
    for name, entry in BACKENDS.items():
        assert backend_class(name).backend_type == name
        assert entry.config_keys[0] == "Type" and config.BACKEND_KEYS[name] == entry.config_keys
        parsed = config.parse_network_config({"Network": "10.0.0.0/8", "Backend": {"Type": name}})
        assert parsed.backend.type == name
    with pytest.raises(config.ConfigError, match="unknown backend type: \"ipip\"; use one of: vxlan, host-gw, udp, wireguard, extension, alloc"):
        config.parse_network_config({"Network": "10.0.0.0/8", "Backend": {"Type": "ipip"}})


def test_a_change_is_its_log_text_with_kind_action_and_what():
    change = changes.Change(changes.ROUTE, "removed", "route 10.1.0.0/24 via 10.1.0.0 dev flannel.1 onlink",
                            "removed stale route 10.1.0.0/24 via 10.1.0.0 dev flannel.1 onlink")
    assert change == "removed stale route 10.1.0.0/24 via 10.1.0.0 dev flannel.1 onlink"
    assert (change.kind, change.action) == ("route", "removed")
    copy = pickle.loads(pickle.dumps(change))
    assert (copy, copy.kind, copy.what) == (change, change.kind, change.what)
    assert changes.Change(changes.DEVICE, "removed", "flannel.1") == "removed flannel.1"
    with pytest.raises(ValueError, match="unknown change kind 'rule'"):
        changes.Change("rule", "added", "x")


def test_a_vxlan_peer_yields_one_change_of_each_kind_and_repairs_count_them(monkeypatch):
    kernel = FakeKernel(monkeypatch)
    backend = VxlanBackend(VXLAN, IFACE, PUBLIC_IP, ipr=object())
    backend.device_index, backend.subnet = 3, IPNetwork("10.10.0.0/20")
    peer = Lease(IPNetwork("10.20.0.0/20"), LeaseAttrs("192.168.205.11", "vxlan", "0e:00:00:00:00:11"), ttl=600)
    added = backend.add_peer(peer)
    assert [(change.kind, change.action) for change in added] == [
        ("neighbour", "added"), ("fdb", "added"), ("route", "added")]
    assert added[2] == "added route 10.20.0.0/20 via 10.20.0.0 dev flannel.100 onlink"
    kernel.neighbours.clear()  # someone deletes the neighbour: the reconcile restores it
    repairs = RouteBackend.sync(backend, {peer.subnet: peer})  # the peers' part (no device here)
    assert [(change.kind, change.action) for change in repairs] == [("neighbour", "added")]
    agent = types.SimpleNamespace(health=lambda: (True, ""), bad_leases=types.SimpleNamespace(count=0, total=0),
                                  in_force=types.SimpleNamespace(config=None, backend=None),
                                  keeper=types.SimpleNamespace(lease=None),
                                  peer_table=types.SimpleNamespace(peers={}))
    metrics.enable(agent)
    try:
        metrics.repaired(repairs + backend.remove_peer(peer.subnet))
        counted = metrics._active.repairs
        assert [counted.labels(kind)._value.get() for kind in ("neighbour", "fdb", "route", "device")] == [2, 1, 1, 0]
    finally:
        metrics.disable()
