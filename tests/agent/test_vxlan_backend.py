"""VxlanBackend on real vxlan devices: three host namespaces on one LAN, hand-made leases."""

import json
import logging

import pytest
from netaddr import IPNetwork
from pyroute2 import netns as pyroute2_netns

from ansible_collections.netlab.flannel.plugins.module_utils.flannel import netlink
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.backends.vxlan import VxlanBackend
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.config import parse_network_config
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.lease import Lease, LeaseAttrs
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.netlink.events import (
    FdbEvent, KernelEvents, NeighbourEvent, RouteEvent)

SUBNETS = ["10.5.1.0/24", "10.5.2.0/24", "10.5.3.0/24"]


def vxlan_config(**backend):
    backend = dict({"Type": "vxlan", "VNI": 1}, **backend)
    return parse_network_config({"Network": "10.5.0.0/16", "Backend": backend})


def lease(subnet, public_ip, mac, backend_type="vxlan"):
    return Lease(IPNetwork(subnet), LeaseAttrs(public_ip, backend_type, mac))


class Node:
    """A host with its backend started and its own lease configured."""

    def __init__(self, host, subnet, config):
        self.host, self.subnet = host, subnet
        self.ipr = host.ipr()
        self.backend = VxlanBackend(config, netlink.select_interface(ipr=self.ipr), host.address, ipr=self.ipr)
        self.info = self.backend.setup()
        self.backend.configure_lease(subnet)
        self.lease = lease(subnet, host.address, self.info["vtep_mac"])

    def state(self):
        return netlink.overlay_state(self.backend.vni, ipr=self.ipr)


def peers_of(node, nodes):
    return dict((other.subnet, other.lease) for other in nodes if other is not node)


@pytest.fixture
def nodes(three_hosts):
    config = vxlan_config()
    nodes = [Node(host, subnet, config) for host, subnet in zip(three_hosts, SUBNETS)]
    for node in nodes:
        node.backend.sync(peers_of(node, nodes))
    return nodes


def test_device_has_exact_attributes(nodes):
    host = nodes[0].host
    device = nodes[0].state()["device"]
    assert device["kind"] == "vxlan" and device["vni"] == 1 and device["port"] == 8472
    assert device["local"] == host.address and device["link_name"] == "eth0"
    assert device["learning"] is False and device["gbp"] is False
    assert device["mtu"] == 1450 == nodes[0].info["mtu"]
    assert device["mac"] == netlink.deterministic_vtep_mac(host.address, 1) == nodes[0].info["vtep_mac"]
    assert device["addresses"] == ["10.5.1.0/32"] and device["state"] == "up"
    # The same facts as iproute2 sees them, an oracle independent of our own reading code.
    shown = json.loads(host.run(["ip", "-d", "-j", "link", "show", "flannel.1"]).stdout)[0]
    data = shown["linkinfo"]["info_data"]
    assert (data["id"], data["local"], data["port"], data["learning"]) == (1, host.address, 8472, False)
    assert (shown["mtu"], shown["address"]) == (1450, device["mac"])


def test_peer_entries_are_exact_and_sync_is_idempotent(nodes):
    first, second, third = nodes
    state = first.state()
    assert state["neighbours"] == [{"ip": "10.5.2.0", "mac": second.info["vtep_mac"]},
                                   {"ip": "10.5.3.0", "mac": third.info["vtep_mac"]}]
    assert state["fdb"] == sorted([{"mac": second.info["vtep_mac"], "dst": second.host.address},
                                   {"mac": third.info["vtep_mac"], "dst": third.host.address}],
                                  key=lambda entry: entry["mac"])
    assert state["routes"] == [{"dst": "10.5.2.0/24", "gateway": "10.5.2.0", "onlink": True},
                               {"dst": "10.5.3.0/24", "gateway": "10.5.3.0", "onlink": True}]
    assert first.backend.sync(peers_of(first, nodes)) == []
    assert first.backend.add_peer(third.lease) == []  # unchanged lease: nothing to do


def test_container_pings_container_across_vxlan(lab, nodes):
    source = lab.add_container(nodes[0].host, SUBNETS[0])
    target = lab.add_container(nodes[2].host, SUBNETS[2])
    before = nodes[2].state()
    # Two routers (host 1, host 3) on the way: TTL 64 - 2.
    assert netlink.overlay_state(1, ipr=nodes[2].ipr)["exists"] and before["exists"]
    assert lab_ping(source.ns, target.address) == [62]
    # Without host 1's entries for host 3 the same ping fails: the path really is our overlay.
    nodes[0].backend.remove_peer(SUBNETS[2])
    assert lab_ping(source.ns, target.address) == []


def lab_ping(ns, address):
    from support.netns import ping
    return ping(ns, address, count=2, timeout=1.5)[:1]


def test_removed_peer_loses_its_three_entries(nodes):
    first, second, third = nodes
    changes = first.backend.sync({second.subnet: second.lease})
    mac = third.info["vtep_mac"]
    assert sorted(changes) == sorted([
        "removed stale route 10.5.3.0/24 via 10.5.3.0 dev flannel.1 onlink",
        "removed stale neighbour 10.5.3.0 lladdr %s" % mac,
        "removed stale fdb %s dst %s" % (mac, third.host.address)])
    state = first.state()
    assert [n["ip"] for n in state["neighbours"]] == ["10.5.2.0"]
    assert [f["mac"] for f in state["fdb"]] == [second.info["vtep_mac"]]
    assert [r["dst"] for r in state["routes"]] == ["10.5.2.0/24"]


def test_remove_and_add_one_peer_by_event(nodes):
    first, _second, third = nodes
    assert len(first.backend.remove_peer(third.subnet)) == 3
    assert "10.5.3.0" not in [n["ip"] for n in first.state()["neighbours"]]
    assert len(first.backend.add_peer(third.lease)) == 3
    assert first.state() == netlink.overlay_state("flannel.1", ipr=first.ipr)
    assert "10.5.3.0/24" in [r["dst"] for r in first.state()["routes"]]


@pytest.mark.parametrize("by_event", [False, True], ids=["sync", "add_peer"])
def test_changed_peer_mac_replaces_stale_entries(nodes, by_event):
    first, second, third = nodes
    old_mac, new_mac = third.info["vtep_mac"], "02:00:00:00:03:03"
    changed = lease(third.subnet, third.host.address, new_mac)
    if by_event:
        changes = first.backend.add_peer(changed)
    else:
        changes = first.backend.sync({second.subnet: second.lease, third.subnet: changed})
    assert "removed %sfdb %s dst %s" % ("" if by_event else "stale ", old_mac, third.host.address) in changes
    state = first.state()
    assert {"ip": "10.5.3.0", "mac": new_mac} in state["neighbours"]
    assert [f["dst"] for f in state["fdb"] if f["mac"] == old_mac] == []
    assert {"mac": new_mac, "dst": third.host.address} in state["fdb"]


def test_entries_deleted_by_hand_are_reported_and_restored(nodes):
    first = nodes[0]
    wanted = first.state()
    first.host.run(["ip", "route", "del", "10.5.2.0/24"])
    first.host.run(["bridge", "fdb", "del", nodes[2].info["vtep_mac"], "dev", "flannel.1",
                    "dst", nodes[2].host.address, "self"])
    changes = first.backend.sync(peers_of(first, nodes))
    assert sorted(changes) == sorted([
        "added route 10.5.2.0/24 via 10.5.2.0 dev flannel.1 onlink",
        "added fdb %s dst %s" % (nodes[2].info["vtep_mac"], nodes[2].host.address)])
    assert first.state() == wanted


def test_incompatible_device_is_recreated_compatible_one_reused(three_hosts, caplog):
    host = three_hosts[0]
    host.run(["ip", "link", "add", "flannel.1", "type", "vxlan", "id", "1", "local", host.address,
              "dev", "eth0", "dstport", "4789"])  # learning on, wrong port
    ipr = host.ipr()
    backend = VxlanBackend(vxlan_config(), netlink.select_interface(ipr=ipr), host.address, ipr=ipr)
    with caplog.at_level(logging.WARNING):
        changes = backend.setup()["changes"]
    assert changes[0].startswith("removed incompatible flannel.1 (learning True, want False; "
                                 "port 4789, want 8472)")
    assert changes[1].startswith("created flannel.1")
    assert "recreating device" in caplog.text
    device = netlink.overlay_state(1, ipr=ipr)["device"]
    assert (device["port"], device["learning"], device["mtu"]) == (8472, False, 1450)
    index = device["index"]
    assert backend.setup()["changes"] == []
    assert netlink.overlay_state(1, ipr=ipr)["device"]["index"] == index


def test_wrong_mac_and_mtu_on_reused_device_are_fixed(nodes):
    first = nodes[0]
    first.host.run(["ip", "link", "set", "flannel.1", "address", "02:99:99:99:99:99", "mtu", "1300"])
    changes = first.backend.setup()["changes"]
    assert changes == ["set flannel.1 mac %s (was 02:99:99:99:99:99)" % first.info["vtep_mac"],
                       "set flannel.1 mtu 1450 (was 1300)"]


def test_configured_mtu_wins_over_interface_mtu(three_hosts):
    host = three_hosts[0]
    ipr = host.ipr()
    backend = VxlanBackend(vxlan_config(MTU=1400), netlink.select_interface(ipr=ipr), host.address, ipr=ipr)
    assert backend.setup()["mtu"] == 1400
    assert netlink.overlay_state(1, ipr=ipr)["device"]["mtu"] == 1400


def test_old_lease_address_replaced_foreign_address_kept(nodes):
    first = nodes[0]
    first.host.run(["ip", "addr", "add", "169.254.7.7/16", "dev", "flannel.1"])
    first.host.run(["ip", "addr", "add", "10.5.9.0/32", "dev", "flannel.1"])
    assert first.backend.configure_lease(first.subnet) == ["removed old address 10.5.9.0/32 from flannel.1"]
    assert first.state()["device"]["addresses"] == ["10.5.1.0/32", "169.254.7.7/16"]


def test_foreign_backend_lease_is_skipped_with_warning(nodes, caplog):
    first = nodes[0]
    with caplog.at_level(logging.WARNING):
        # (host-gw peers get direct routes mid-way through a backend change: test_mixed_backends.py)
        changes = first.backend.sync({"10.5.7.0/24": lease("10.5.7.0/24", "172.31.250.77", None, "ipip")})
    assert "backend type ipip is not vxlan" in caplog.text
    assert len(changes) == 6  # both real peers' entries removed, nothing added for the ipip one
    assert first.state()["routes"] == []


def test_direct_routing_uses_public_ip_for_on_link_peers(three_hosts):
    config = vxlan_config(DirectRouting=True)
    nodes = [Node(host, subnet, config) for host, subnet in zip(three_hosts, SUBNETS)]
    first = nodes[0]
    changes = first.backend.sync(peers_of(first, nodes))
    assert sorted(changes) == ["added route 10.5.2.0/24 via 172.31.250.12 dev eth0",
                               "added route 10.5.3.0/24 via 172.31.250.13 dev eth0"]
    state = first.state()
    assert state["neighbours"] == [] and state["fdb"] == [] and state["routes"] == []
    assert first.backend.sync(peers_of(first, nodes)) == []
    assert first.backend.sync({}) == ["removed stale route 10.5.2.0/24 via 172.31.250.12 dev eth0",
                                      "removed stale route 10.5.3.0/24 via 172.31.250.13 dev eth0"]


def test_deleted_device_is_recreated_with_all_entries_by_sync(nodes):
    first = nodes[0]
    wanted = first.state()
    first.host.run(["ip", "link", "del", "flannel.1"])
    changes = first.backend.sync(peers_of(first, nodes))
    assert changes[0].startswith("created flannel.1") and "added address 10.5.1.0/32 to flannel.1" in changes
    assert len([change for change in changes if change.startswith("added ")]) == 1 + 6
    restored = first.state()
    restored["device"].pop("index"), wanted["device"].pop("index")
    assert restored == wanted


def test_device_set_down_is_brought_up_by_sync(nodes):
    first = nodes[0]
    first.host.run(["ip", "link", "set", "flannel.1", "down"])
    changes = first.backend.sync(peers_of(first, nodes))
    assert changes[0] == "set flannel.1 up"
    assert first.state()["device"]["state"] == "up"
    assert len(first.state()["routes"]) == 2


INSIDE_NAMESPACE = r"""
import subprocess
import sys
from pyroute2.ethtool import Ethtool
from ansible_collections.netlab.flannel.plugins.module_utils.flannel import netlink
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.backends.vxlan import VxlanBackend
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.config import parse_network_config

def features():
    found = Ethtool().get_features("flannel.1").features
    return " ".join("%s=%s" % (name, "on" if found[name].enable else "off")
                    for name in ("tx-checksum-ip-generic", "tx-tcp-segmentation"))

config = parse_network_config({"Network": "10.5.0.0/16", "Backend": {"Type": "vxlan", "VNI": 1}})
backend = VxlanBackend(config, netlink.select_interface(), sys.argv[1], offload=sys.argv[2])  # own IPRoute
setup_changes = backend.setup()["changes"]
backend.configure_lease("10.5.1.0/24")
print("setup", [c for c in setup_changes if "checksum" in c], features())
# Someone flips the feature behind the agent's back: the reconcile puts the chosen state back.
flipped = "off" if backend.offload else "on"
subprocess.run(["ethtool", "-K", "flannel.1", "tx-checksum-ip-generic", flipped], check=True,
               stdout=subprocess.DEVNULL)
print("flipped", features())
print("sync", [c for c in backend.sync({}) if "checksum" in c], features())
"""


def in_namespace_python(host, script, *args):
    """Run a python script inside the host's namespace, with the checkout importable as netlab.flannel."""
    import os
    import sys
    collections = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                               ".collections")
    return host.run(["env", "PYTHONPATH=" + collections, sys.executable, "-c", script] + list(args))


def _offload_run(host, choice):
    return in_namespace_python(host, INSIDE_NAMESPACE, host.address, choice).stdout


@pytest.mark.parametrize("choice,state", [("off", "off"), ("on", "on"), ("auto", "on")])
def test_vxlan_offload_choice_is_applied_and_kept_by_reconcile(three_hosts, choice, state):
    """auto on this kernel (5.7 or newer) keeps the kernel's default, on; segmentation offload
    follows the checksum feature; a flip behind the agent's back is undone by sync()."""
    shown = _offload_run(three_hosts[0], choice).splitlines()
    other = "off" if state == "on" else "on"
    changed = ["set flannel.1 tx-checksum-ip-generic off"] if state == "off" else []
    assert shown[0] == "setup %r tx-checksum-ip-generic=%s tx-tcp-segmentation=%s" % (changed, state, state)
    assert shown[1] == "flipped tx-checksum-ip-generic=%s tx-tcp-segmentation=%s" % (other, other)
    assert shown[2] == ("sync ['set flannel.1 tx-checksum-ip-generic %s'] "
                        "tx-checksum-ip-generic=%s tx-tcp-segmentation=%s" % (state, state, state))


def kernel_routes(host):
    """Every main-table IPv4 route of a host, as iproute2 shows it (an independent oracle)."""
    return sorted(route["dst"] for route in json.loads(host.run(["ip", "-j", "route", "show"]).stdout))


@pytest.mark.parametrize("by_event", [False, True], ids=["sync", "add_peer"])
def test_leases_that_would_steer_traffic_elsewhere_program_nothing(nodes, by_event, caplog):
    first, second, third = nodes
    first.host.run(["ip", "addr", "add", "10.5.8.1/32", "dev", "lo"])  # a host address inside the Network
    before = kernel_routes(first.host)
    mac = "02:00:00:00:09:09"
    hostile = {
        "192.168.0.0/24": (lease("192.168.0.0/24", "172.31.250.99", mac), "outside the flannel network"),
        "0.0.0.0/0": (lease("0.0.0.0/0", "172.31.250.99", mac), "outside the flannel network"),
        "10.5.0.0/16": (lease("10.5.0.0/16", "172.31.250.99", mac), "overlaps this host's own subnet"),
        "10.5.1.128/25": (lease("10.5.1.128/25", "172.31.250.99", mac), "overlaps this host's own subnet"),
        "10.5.8.0/24": (lease("10.5.8.0/24", "172.31.250.99", mac), "contains this host's address 10.5.8.1"),
        "10.5.4.0/24": (lease("10.5.4.0/24", "10.5.9.9", mac), "PublicIP 10.5.9.9 is not an IPv4 address outside"),
        "10.5.5.0/24": (lease("10.5.5.0/24", first.host.address, mac), "is this host's own address"),
        "10.5.6.0/24": (lease("10.5.6.0/24", "172.31.250.99", "zz:zz"), 'VtepMAC "zz:zz" is not a MAC'),
        "10.5.7.0/24": (lease("10.5.7.0/24", "172.31.250.99", "01:00:5e:00:00:01"), "is a multicast MAC"),
    }
    with caplog.at_level(logging.WARNING):
        if by_event:
            changes = sum((first.backend.add_peer(item) for item, _words in hostile.values()), [])
        else:
            peers = dict(peers_of(first, nodes), **dict((key, item) for key, (item, _words) in hostile.items()))
            changes = first.backend.sync(peers)
    assert changes == []
    for subnet, (_item, words) in hostile.items():
        assert "ignoring lease %s: " % IPNetwork(subnet) in caplog.text and words in caplog.text, subnet
    state = first.state()
    assert [route["dst"] for route in state["routes"]] == ["10.5.2.0/24", "10.5.3.0/24"]
    assert [entry["mac"] for entry in state["fdb"]] == sorted([second.info["vtep_mac"], third.info["vtep_mac"]])
    assert kernel_routes(first.host) == before


ADDRESS_ADDED_AFTER_SYNC = r"""
import subprocess
import sys
from netaddr import IPNetwork
from ansible_collections.netlab.flannel.plugins.module_utils.flannel import netlink
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.backends.vxlan import VxlanBackend
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.config import parse_network_config
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.lease import Lease, LeaseAttrs
config = parse_network_config({"Network": "10.5.0.0/16", "Backend": {"Type": "vxlan", "VNI": 1}})
backend = VxlanBackend(config, netlink.select_interface(), sys.argv[1])  # its own IPRoute: listens
backend.setup()
backend.configure_lease("10.5.1.0/24")
backend.sync({})
mac = "02:00:00:00:09:09"
print("before", backend.add_peer(Lease(IPNetwork("10.5.2.0/24"), LeaseAttrs("172.31.250.99", "vxlan", mac))))
subprocess.run(["ip", "addr", "add", "10.5.8.1/32", "dev", "lo"], check=True)
print("after", backend.add_peer(Lease(IPNetwork("10.5.8.0/24"), LeaseAttrs("172.31.250.98", "vxlan", mac))))
"""


def test_address_added_after_the_last_sync_is_seen_by_the_next_event(three_hosts, caplog):
    """add_peer() re-reads the host's addresses only when the kernel announced a change: an
    address added after the last sync still keeps a lease over it out of the kernel."""
    host = three_hosts[0]
    result = in_namespace_python(host, ADDRESS_ADDED_AFTER_SYNC, host.address)
    lines = result.stdout.splitlines()
    assert lines[0].startswith("before ['added neighbour 10.5.2.0 lladdr 02:00:00:00:09:09'")
    assert lines[1] == "after []"
    assert "ignoring lease 10.5.8.0/24: subnet 10.5.8.0/24 contains this host's address 10.5.8.1" in result.stderr
    assert "10.5.8.0/24" not in host.run(["ip", "route", "show"]).stdout


# ---- netlink.Batch: a peer's entries as one request, each refusal named ----------------------------

def test_a_refused_request_is_named_and_the_others_of_the_batch_are_made(nodes):
    node = nodes[0]
    index = node.backend.device_index
    batch = netlink.Batch(node.ipr)
    try:
        netlink.replace_neighbour(index, "10.5.7.0", "0e:00:00:00:07:07", ipr=batch)
        netlink.replace_route(netlink.Route("10.5.8.0/24", "10.5.8.0", 4242, True), ipr=batch)  # no such link
        netlink.replace_route(netlink.Route("10.5.7.0/24", "10.5.7.0", index, True), ipr=batch)
        refused = batch.send()
        assert list(refused) == [1]
        assert str(refused[1]) == "route 10.5.8.0/24 via 10.5.8.0 oif 4242 onlink: No such device (errno 19)"
        assert netlink.is_errno(refused[1], 19)
        state = node.state()
        assert {"ip": "10.5.7.0", "mac": "0e:00:00:00:07:07"} in state["neighbours"]
        assert {"dst": "10.5.7.0/24", "gateway": "10.5.7.0", "onlink": True} in state["routes"]
        netlink.delete_route(netlink.Route("10.5.7.0/24", "10.5.7.0", index, True), ipr=batch)
        netlink.delete_neighbour(index, "10.5.7.0", ipr=batch)
        netlink.delete_neighbour(index, "10.5.7.0", ipr=batch)  # gone by then
        refused = batch.send()
        assert list(refused) == [2] and netlink.is_errno(refused[2], 2)
        assert str(refused[2]).startswith("neighbour 10.5.7.0 lladdr None on link %d: " % index)
        state = node.state()
        assert "10.5.7.0/24" not in [route["dst"] for route in state["routes"]]
        assert "10.5.7.0" not in [neighbour["ip"] for neighbour in state["neighbours"]]
        assert batch.send() == {}  # nothing queued: nothing sent
    finally:
        batch.close()


def test_add_peer_on_a_vanished_device_logs_each_entry_refused_and_programs_nothing(nodes, caplog):
    first, second, third = nodes
    first.backend.remove_peer(third.subnet)
    netlink.delete_link(first.backend.device_index, first.ipr)
    with caplog.at_level(logging.ERROR, logger="flannel.backend.vxlan"):
        assert first.backend.add_peer(third.lease) == []
    index = first.backend.device_index
    mac = third.info["vtep_mac"]
    assert [record.getMessage() for record in caplog.records] == [
        "failed to program peer 10.5.3.0/24: neighbour 10.5.3.0 lladdr %s on link %d: No such device (errno 19)"
        % (mac, index),
        "failed to program peer 10.5.3.0/24: fdb %s dst %s on link %d: No such device (errno 19)"
        % (mac, third.host.address, index),
        "failed to program peer 10.5.3.0/24: route 10.5.3.0/24 via 10.5.3.0 oif %d onlink: No such device "
        "(errno 19)" % index]
    # The peer was not recorded as programmed: the reconcile re-creates the device and programs it.
    changes = first.backend.sync(dict((node.subnet, node.lease) for node in (second, third)))
    assert "added route 10.5.3.0/24 via 10.5.3.0 dev flannel.1 onlink" in changes


def test_remove_peer_sends_one_request_and_an_entry_already_gone_is_no_change_and_no_error(nodes, caplog):
    first, _second, third = nodes
    netlink.delete_neighbour(first.backend.device_index, "10.5.3.0", ipr=first.ipr)  # someone else did
    with caplog.at_level(logging.ERROR, logger="flannel.backend.vxlan"):
        changes = first.backend.remove_peer(third.subnet)
    assert [(change.kind, change.action) for change in changes] == [("route", "removed"), ("fdb", "removed")]
    assert caplog.records == []
    state = first.state()
    assert "10.5.3.0/24" not in [route["dst"] for route in state["routes"]]
    assert third.info["vtep_mac"] not in [entry["mac"] for entry in state["fdb"]]


def test_the_kernel_drops_the_announcements_of_a_batch_only(nodes):
    """With a kernel-events socket told (announce_to), the changes a peer's batch makes are not
    queued there (its neighbour and route, stamped with the batch's port, and its FDB entry, which
    the vxlan driver stamps with port 0); the same entries changed by anyone else are."""
    first, _second, third = nodes
    index, mac, peer = first.backend.device_index, third.info["vtep_mac"], third.host.address
    first.backend.remove_peer(third.subnet)
    pyroute2_netns.pushns(first.host.ns)
    try:
        events = KernelEvents()
    finally:
        pyroute2_netns.popns()
    try:
        first.backend.announce_to(events)
        assert len(first.backend.add_peer(third.lease)) == 3
        assert events.read() == []  # the kernel announces within the request: nothing came
        route = netlink.Route("10.5.3.0/24", "10.5.3.0", index, True)
        netlink.delete_fdb(index, mac, peer, first.ipr)
        netlink.replace_fdb(index, mac, peer, first.ipr)
        netlink.replace_fdb(index, mac, "192.0.2.9", first.ipr)  # another dst for the peer's MAC
        netlink.delete_neighbour(index, "10.5.3.0", first.ipr)
        netlink.delete_route(route, first.ipr)
        seen = events.read()
        assert [event for event in seen if isinstance(event, FdbEvent)] == [
            FdbEvent(True, index, mac, peer), FdbEvent(False, index, mac, peer), FdbEvent(False, index, mac, "192.0.2.9")]
        assert (True, "10.5.3.0") in [(event.removed, event.ip) for event in seen if isinstance(event, NeighbourEvent)]
        assert RouteEvent(True, route, 0) in seen
        assert len(first.backend.restore([route], [("10.5.3.0", mac)], [(mac, peer)])) == 3
        seen = events.read()  # written by the backend's other socket: read, and compared with what it wants
        assert FdbEvent(False, index, mac, peer) in seen and RouteEvent(False, route, 0) in seen
        assert NeighbourEvent(False, index, "10.5.3.0", mac, True) in seen
        assert [(change.kind, change.action) for change in first.backend.remove_peer(third.subnet)] == [
            ("route", "removed"), ("neighbour", "removed"), ("fdb", "removed")]
        # Only the neighbour's final removal, which the kernel stamps with port 0, is queued (and compared).
        assert [(type(event), event.removed) for event in events.read()] in ([], [(NeighbourEvent, True)])
        netlink.replace_fdb(index, mac, peer, first.ipr)  # the filter is off once the batch is sent
        assert events.read() == [FdbEvent(False, index, mac, peer)]
    finally:
        first.backend.announce_to(None)
        events.close()


def test_the_kernel_drops_the_announcement_of_a_batchs_ipv6_fdb_entry_only(three_hosts):
    """flannel-v6.<VNI>'s FDB entries have an IPv6 dst: the vxlan driver announces them with port
    0 as it does the IPv4 ones, and the batch's filter names them the same way; the same entry
    written by anyone else is queued."""
    host = three_hosts[0]
    host.run(["ip", "link", "add", "vx6", "type", "vxlan", "id", "7", "dstport", "8472", "local", "fd00:205::11",
              "nolearning"])
    ipr = host.ipr()
    index, mac, peer = netlink.link_index("vx6", ipr), "0e:00:00:00:06:06", "fd00:205::12"
    pyroute2_netns.pushns(host.ns)
    try:
        events = KernelEvents()
    finally:
        pyroute2_netns.popns()
    batch = netlink.Batch(ipr)
    batch.own_announcements = events
    try:
        netlink.replace_fdb(index, mac, peer, ipr=batch)
        assert batch.send() == {}
        assert events.read() == []  # dropped by the kernel within the send
        assert {"mac": mac, "dst": peer} in [{"mac": entry["mac"], "dst": entry["dst"]} for entry in json.loads(
            host.run(["bridge", "-j", "fdb", "show", "dev", "vx6"]).stdout)]
        netlink.delete_fdb(index, mac, peer, ipr)  # another socket's: the filter is off once the batch is sent
        netlink.replace_fdb(index, mac, peer, ipr)
        assert events.read() == [FdbEvent(True, index, mac, peer), FdbEvent(False, index, mac, peer)]
    finally:
        batch.close()
        events.close()
