"""netlab.flannel.overlay_info: the drift logic, and the module in a network namespace of its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest
from netaddr import IPNetwork

from ansible_collections.netlab.flannel.plugins.modules.overlay_info import _lease, compare_peers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
PEER = {"subnet": "10.13.48.0/20", "public_ip": "192.168.205.11", "vtep_mac": "2a:11:3b:5c:6d:7e"}
SELF = {"subnet": "10.15.64.0/20", "public_ip": "192.168.205.10", "vtep_mac": "9e:61:5b:8a:30:10"}


def kernel(routes=(), neighbours=(), fdb=()):
    return {"routes": list(routes), "neighbours": list(neighbours), "fdb": list(fdb)}


PROGRAMMED = kernel(routes=[{"dst": "10.13.48.0/20", "gateway": "10.13.48.0", "onlink": True}],
                    neighbours=[{"ip": "10.13.48.0", "mac": "2A:11:3B:5C:6D:7E"}],
                    fdb=[{"mac": "2a:11:3b:5c:6d:7e", "dst": "192.168.205.11"}])


def test_in_sync_ignores_own_lease():
    status, drift = compare_peers(PROGRAMMED, [SELF, PEER], IPNetwork("10.15.64.0/20"), IPNetwork)
    assert drift == []
    assert status == [dict(subnet="10.13.48.0/20", public_ip="192.168.205.11", route=True, neighbour=True, fdb=True)]


def test_the_lease_shows_the_ipv6_subnet_of_a_dual_stack_subnet_file_and_none_without():
    env = {"FLANNEL_NETWORK": "10.0.0.0/8", "FLANNEL_SUBNET": "10.15.64.1/20", "FLANNEL_MTU": "1450",
           "FLANNEL_IPMASQ": "true"}
    device = {"mac": "9e:61:5b:8a:30:10"}
    assert _lease(env, device, IPNetwork)["ipv6_subnet"] is None
    dual = _lease(dict(env, FLANNEL_IPV6_NETWORK="fd00:10::/48", FLANNEL_IPV6_SUBNET="fd00:10:0:5::1/64"), device, IPNetwork)
    assert (dual["ipv6_subnet"], dual["ipv6_address"], dual["subnet"]) == ("fd00:10:0:5::/64", "fd00:10:0:5::1/64",
                                                                           "10.15.64.0/20")


def test_missing_entries_are_each_reported():
    status, drift = compare_peers(kernel(), [PEER], None, IPNetwork)
    assert status[0] == dict(subnet="10.13.48.0/20", public_ip="192.168.205.11", route=False, neighbour=False,
                             fdb=False)
    assert drift == [
        "10.13.48.0/20 (192.168.205.11): no route 10.13.48.0/20 via 10.13.48.0 onlink",
        "10.13.48.0/20 (192.168.205.11): no neighbour 10.13.48.0 lladdr 2a:11:3b:5c:6d:7e",
        "10.13.48.0/20 (192.168.205.11): no FDB entry 2a:11:3b:5c:6d:7e dst 192.168.205.11",
    ]


def test_stale_entries_are_reported():
    stale = kernel(routes=[{"dst": "10.13.48.0/20", "gateway": "10.13.48.0", "onlink": False},
                           {"dst": "10.20.0.0/20", "gateway": "10.20.0.0", "onlink": True}],
                   neighbours=[{"ip": "10.13.48.0", "mac": "02:00:00:00:00:01"}],
                   fdb=[{"mac": "2a:11:3b:5c:6d:7e", "dst": "192.168.205.99"}])
    dummy, drift = compare_peers(stale, [PEER], None, IPNetwork)
    assert drift == [
        "10.13.48.0/20 (192.168.205.11): wrong route 10.13.48.0/20 via 10.13.48.0 onlink",
        "10.13.48.0/20 (192.168.205.11): wrong neighbour 10.13.48.0 lladdr 2a:11:3b:5c:6d:7e",
        "10.13.48.0/20 (192.168.205.11): no FDB entry 2a:11:3b:5c:6d:7e dst 192.168.205.11",
        "route 10.20.0.0/20 via 10.20.0.0 matches no peer lease",
    ]


def test_peer_without_a_usable_vtep_mac_expects_nothing():
    missing = dict(PEER, vtep_mac=None)
    multicast = dict(PEER, subnet="10.20.0.0/20", vtep_mac="01:00:5e:00:00:01")
    status, drift = compare_peers(PROGRAMMED, [missing, multicast], None, IPNetwork)
    assert drift == [
        "10.13.48.0/20 (192.168.205.11): VtepMAC missing, so the agent programs nothing for it",
        "10.20.0.0/20 (192.168.205.11): VtepMAC 01:00:5e:00:00:01 is a multicast MAC address, so the agent "
        "programs nothing for it",
        "route 10.13.48.0/20 via 10.13.48.0 matches no peer lease",
    ]
    assert [entry["route"] for entry in status] == [None, None]


# ---- the module on a real kernel, inside a private network namespace --------------------------

RUNNER = """
import json, sys
from ansible.module_utils.testing import patch_module_args
from ansible_collections.netlab.flannel.plugins.modules import overlay_info
with patch_module_args(json.loads(sys.argv[1])):
    overlay_info.main()
"""


def ip(netns, *args):
    subprocess.run(["ip", "-n", netns] + list(args), check=True, capture_output=True)


@pytest.fixture
def netns():
    if os.geteuid() != 0:
        pytest.skip("needs root to create a network namespace")
    name = "nlfl-oi-%s" % uuid.uuid4().hex[:8]
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        ip(name, "link", "set", "lo", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)


def run_in(netns, args):
    # PYTHONPATH: the checkout as the collection netlab.flannel, in the child as in this process.
    process = subprocess.run(["ip", "netns", "exec", netns, "env", "PYTHONPATH=" + os.path.join(ROOT, ".collections"),
                              sys.executable, "-c", RUNNER, json.dumps(args)],
                             capture_output=True, text=True, check=False)
    assert process.stdout, process.stderr
    return json.loads(process.stdout)


def test_module_reads_a_programmed_device(netns, tmp_path):
    ip(netns, "link", "add", "flannel.100", "address", "9e:61:5b:8a:30:10", "mtu", "1450", "type", "vxlan",
       "id", "100", "local", "192.0.2.10", "dstport", "8472", "nolearning")
    ip(netns, "addr", "add", "10.15.64.0/32", "dev", "flannel.100")
    ip(netns, "link", "set", "flannel.100", "up")
    ip(netns, "neigh", "replace", "10.13.48.0", "lladdr", PEER["vtep_mac"], "dev", "flannel.100", "nud", "permanent")
    subprocess.run(["ip", "netns", "exec", netns, "bridge", "fdb", "append", PEER["vtep_mac"], "dev", "flannel.100",
                    "dst", PEER["public_ip"], "self", "permanent"], check=True)
    ip(netns, "route", "replace", "10.13.48.0/20", "via", "10.13.48.0", "dev", "flannel.100", "onlink")
    subnet_file = tmp_path / "subnet.env"
    subnet_file.write_text("FLANNEL_NETWORK=10.0.0.0/8\nFLANNEL_SUBNET=10.15.64.1/20\nFLANNEL_MTU=1450\n"
                           "FLANNEL_IPMASQ=false\n")

    result = run_in(netns, dict(vni=100, subnet_file=str(subnet_file), peers=[SELF, PEER]))
    assert result["changed"] is False
    assert result["exists"] is True
    device = result["device"]
    assert (device["kind"], device["vni"], device["port"], device["mtu"]) == ("vxlan", 100, 8472, 1450)
    assert device["learning"] is False and device["state"] == "up"
    assert device["addresses"] == ["10.15.64.0/32"]
    assert result["lease"] == dict(network="10.0.0.0/8", subnet="10.15.64.0/20", address="10.15.64.1/20",
                                   mtu=1450, ipmasq=False, vtep_mac="9e:61:5b:8a:30:10",
                                   ipv6_subnet=None, ipv6_address=None)
    assert result["in_sync"] is True, result["drift"]

    # Drift: a peer's FDB entry goes missing.
    subprocess.run(["ip", "netns", "exec", netns, "bridge", "fdb", "del", PEER["vtep_mac"], "dev", "flannel.100",
                    "dst", PEER["public_ip"], "self"], check=True)
    result = run_in(netns, dict(vni=100, subnet_file=str(subnet_file), peers=[SELF, PEER]))
    assert result["in_sync"] is False
    assert result["drift"] == ["10.13.48.0/20 (192.168.205.11): no FDB entry 2a:11:3b:5c:6d:7e dst 192.168.205.11"]


# A dual-stack pair: this host's IPv6 subnet fd00:10:0:5::/64, the peer's fd00:10:0:7::/64.
DUAL_ENV = ("FLANNEL_NETWORK=10.0.0.0/8\nFLANNEL_SUBNET=10.15.64.1/20\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=false\n"
            "FLANNEL_IPV6_NETWORK=fd00:10::/48\nFLANNEL_IPV6_SUBNET=fd00:10:0:5::1/64\n")
SELF6 = dict(SELF, ipv6_subnet="fd00:10:0:5::/64", public_ipv6=None, vtep_mac_v6=None)
PEER6 = dict(PEER, ipv6_subnet="fd00:10:0:7::/64", public_ipv6=None, vtep_mac_v6=None)


def programmed_ipv4_peer(netns):
    """flannel.100 on eth0 (192.0.2.10) with PEER's three IPv4 entries."""
    ip(netns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0-peer")
    ip(netns, "addr", "add", "192.0.2.10/24", "dev", "eth0")
    for name in ("eth0", "eth0-peer"):
        ip(netns, "link", "set", name, "up")
    ip(netns, "link", "add", "flannel.100", "address", SELF["vtep_mac"], "type", "vxlan", "id", "100",
       "local", "192.0.2.10", "dev", "eth0", "dstport", "8472", "nolearning")
    ip(netns, "link", "set", "flannel.100", "up")
    ip(netns, "neigh", "replace", "10.13.48.0", "lladdr", PEER["vtep_mac"], "dev", "flannel.100", "nud", "permanent")
    fdb(netns, "append", PEER["vtep_mac"], "flannel.100", PEER["public_ip"])
    ip(netns, "route", "replace", "10.13.48.0/20", "via", "10.13.48.0", "dev", "flannel.100", "onlink")


def fdb(netns, verb, mac, dev, dst):
    subprocess.run(["ip", "netns", "exec", netns, "bridge", "fdb", verb, mac, "dev", dev, "dst", dst, "self"]
                   + (["permanent"] if verb == "append" else []), check=True)


def test_module_checks_ipv6_entries_inside_the_ipv4_device(netns, tmp_path):
    """No IPv6 underlay: the peer's IPv6 subnet rides in flannel.100 (its neighbour and route there,
    the IPv4 FDB entry shared); drift in them is reported as the IPv4 side's."""
    programmed_ipv4_peer(netns)
    ip(netns, "-6", "neigh", "replace", "fd00:10:0:7::", "lladdr", PEER["vtep_mac"], "dev", "flannel.100",
       "nud", "permanent")
    ip(netns, "-6", "route", "replace", "fd00:10:0:7::/64", "via", "fd00:10:0:7::", "dev", "flannel.100", "onlink")
    subnet_file = tmp_path / "subnet.env"
    subnet_file.write_text(DUAL_ENV)
    args = dict(vni=100, subnet_file=str(subnet_file), peers=[SELF6, PEER6])

    result = run_in(netns, args)
    assert result["in_sync"] is True, result["drift"]
    assert result["peers"] == [dict(subnet="10.13.48.0/20", public_ip="192.168.205.11", route=True, neighbour=True,
                                    fdb=True, ipv6_subnet="fd00:10:0:7::/64", route6=True, neighbour6=True, fdb6=None)]
    assert result["ipv6_device"]["exists"] is False
    assert {"dst": "fd00:10:0:7::/64", "gateway": "fd00:10:0:7::", "onlink": True} in result["routes"]

    ip(netns, "-6", "neigh", "del", "fd00:10:0:7::", "dev", "flannel.100")
    result = run_in(netns, args)
    assert result["drift"] == ["fd00:10:0:7::/64 (192.168.205.11): no neighbour fd00:10:0:7:: lladdr %s"
                               % PEER["vtep_mac"]]
    assert result["peers"][0]["neighbour6"] is False

    # An IPv4-only subnet file: the IPv6 route is left over, as an IPv4-only agent would leave it.
    subnet_file.write_text("".join(line for line in DUAL_ENV.splitlines(True) if "IPV6" not in line))
    result = run_in(netns, dict(args, peers=[SELF, PEER]))
    assert result["drift"] == ["route fd00:10:0:7::/64 via fd00:10:0:7:: matches no peer lease"]


def test_module_checks_flannel_v6_over_an_ipv6_underlay(netns, tmp_path):
    """eth0 with a global IPv6 address: the peer's IPv6 entries on flannel-v6.100 with its
    PublicIPv6 and BackendV6Data VtepMAC."""
    mac6 = "6a:2f:0c:11:94:b3"
    programmed_ipv4_peer(netns)
    ip(netns, "-6", "addr", "add", "2001:db8:205::10/64", "dev", "eth0", "nodad")
    ip(netns, "link", "add", "flannel-v6.100", "address", "6a:2f:0c:11:94:10", "type", "vxlan", "id", "100",
       "local", "2001:db8:205::10", "dev", "eth0", "dstport", "8472", "nolearning")
    ip(netns, "link", "set", "flannel-v6.100", "up")
    ip(netns, "-6", "addr", "add", "fd00:10:0:5::/128", "dev", "flannel-v6.100", "nodad")
    ip(netns, "-6", "neigh", "replace", "fd00:10:0:7::", "lladdr", mac6, "dev", "flannel-v6.100", "nud", "permanent")
    fdb(netns, "append", mac6, "flannel-v6.100", "2001:db8:205::11")
    ip(netns, "-6", "route", "replace", "fd00:10:0:7::/64", "via", "fd00:10:0:7::", "dev", "flannel-v6.100", "onlink")
    subnet_file = tmp_path / "subnet.env"
    subnet_file.write_text(DUAL_ENV)
    peer6 = dict(PEER6, public_ipv6="2001:db8:205::11", vtep_mac_v6=mac6)
    args = dict(vni=100, subnet_file=str(subnet_file), peers=[SELF6, peer6])

    result = run_in(netns, args)
    assert result["in_sync"] is True, result["drift"]
    assert result["peers"][0]["route6"] is result["peers"][0]["neighbour6"] is result["peers"][0]["fdb6"] is True
    device6 = result["ipv6_device"]
    assert (device6["name"], device6["device"]["local"], device6["device"]["addresses6"]) == (
        "flannel-v6.100", "2001:db8:205::10", ["fd00:10:0:5::/128"])
    assert device6["fdb"] == [{"mac": mac6, "dst": "2001:db8:205::11"}]

    # Drift: the FDB entry goes, and a route to a subnet no lease holds appears.
    fdb(netns, "del", mac6, "flannel-v6.100", "2001:db8:205::11")
    ip(netns, "-6", "route", "replace", "fd00:10:0:9::/64", "via", "fd00:10:0:9::", "dev", "flannel-v6.100", "onlink")
    result = run_in(netns, args)
    assert result["drift"] == ["fd00:10:0:7::/64 (2001:db8:205::11): no FDB entry %s dst 2001:db8:205::11" % mac6,
                               "route fd00:10:0:9::/64 via fd00:10:0:9:: matches no peer lease"]
    # A peer lease without PublicIPv6 cannot use flannel-v6: its IPv6 entries are expected in flannel.100.
    result = run_in(netns, dict(args, peers=[SELF6, PEER6]))
    assert result["drift"] == ["fd00:10:0:7::/64 (192.168.205.11): no route fd00:10:0:7::/64 via fd00:10:0:7:: onlink",
                               "fd00:10:0:7::/64 (192.168.205.11): no neighbour fd00:10:0:7:: lladdr %s" % PEER["vtep_mac"],
                               "route fd00:10:0:7::/64 via fd00:10:0:7:: matches no peer lease",
                               "route fd00:10:0:9::/64 via fd00:10:0:9:: matches no peer lease"]


def test_module_without_device_or_subnet_file(netns, tmp_path):
    result = run_in(netns, dict(device="flannel.7", subnet_file=str(tmp_path / "absent.env")))
    assert result["exists"] is False
    assert result["device"] is None
    assert result["lease"] is None and result["subnet_env"] == {}
    assert "drift" not in result


def test_module_rejects_bad_vni(netns):
    result = run_in(netns, dict(vni=0))
    assert result["failed"] is True
    assert result["msg"] == "vni: must be between 1 and 16777215, got 0"


# ---- DirectRouting: the module expects what the real backend programs --------------------------

ONLINK_PEER = {"subnet": "10.13.48.0/20", "public_ip": "192.0.2.11", "vtep_mac": "2a:11:3b:5c:6d:7e"}
OFFLINK_PEER = {"subnet": "10.14.0.0/20", "public_ip": "192.168.205.11", "vtep_mac": "2a:11:3b:5c:6d:7f"}


def test_direct_routing_peer_on_the_same_link_needs_only_its_route(netns, tmp_path):
    from pyroute2 import NetNS

    from ansible_collections.netlab.flannel.plugins.module_utils.flannel import netlink
    from ansible_collections.netlab.flannel.plugins.module_utils.flannel.backends.vxlan import VxlanBackend
    from ansible_collections.netlab.flannel.plugins.module_utils.flannel.config import parse_network_config
    from ansible_collections.netlab.flannel.plugins.module_utils.flannel.lease import Lease, LeaseAttrs

    ip(netns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0-peer")
    ip(netns, "addr", "add", "192.0.2.10/24", "dev", "eth0")
    ip(netns, "link", "set", "eth0-peer", "up")
    ip(netns, "link", "set", "eth0", "up")
    config = parse_network_config({"Network": "10.0.0.0/8", "SubnetLen": 20,
                                   "Backend": {"Type": "vxlan", "VNI": 100, "DirectRouting": True}})
    ipr = NetNS(netns)
    try:
        backend = VxlanBackend(config, netlink.select_interface(["eth0"], ipr=ipr), "192.0.2.10", ipr=ipr)
        backend.setup()
        backend.configure_lease(IPNetwork(SELF["subnet"]))
        peers = dict((IPNetwork(peer["subnet"]), Lease(IPNetwork(peer["subnet"]),
                                                       LeaseAttrs(peer["public_ip"], "vxlan", peer["vtep_mac"])))
                     for peer in (ONLINK_PEER, OFFLINK_PEER))
        assert sorted(backend.sync(peers)) == [
            "added fdb 2a:11:3b:5c:6d:7f dst 192.168.205.11",
            "added neighbour 10.14.0.0 lladdr 2a:11:3b:5c:6d:7f",
            "added route 10.13.48.0/20 via 192.0.2.11 dev eth0",
            "added route 10.14.0.0/20 via 10.14.0.0 dev flannel.100 onlink"]
        subnet_file = tmp_path / "subnet.env"
        subnet_file.write_text("FLANNEL_NETWORK=10.0.0.0/8\nFLANNEL_SUBNET=10.15.64.1/20\nFLANNEL_MTU=1450\n")
        args = dict(vni=100, subnet_file=str(subnet_file), peers=[SELF, ONLINK_PEER, OFFLINK_PEER],
                    direct_routing=True)

        result = run_in(netns, args)
        assert result["in_sync"] is True, result["drift"]
        assert result["peers"] == [
            dict(subnet="10.13.48.0/20", public_ip="192.0.2.11", route=True, neighbour=None, fdb=None),
            dict(subnet="10.14.0.0/20", public_ip="192.168.205.11", route=True, neighbour=True, fdb=True)]

        # Without DirectRouting the on-link peer would need the three VXLAN entries instead.
        assert run_in(netns, dict(args, direct_routing=False))["drift"] == [
            "10.13.48.0/20 (192.0.2.11): no route 10.13.48.0/20 via 10.13.48.0 onlink",
            "10.13.48.0/20 (192.0.2.11): no neighbour 10.13.48.0 lladdr 2a:11:3b:5c:6d:7e",
            "10.13.48.0/20 (192.0.2.11): no FDB entry 2a:11:3b:5c:6d:7e dst 192.0.2.11"]

        # Drift: the direct route goes missing, and a stale VXLAN route for that peer appears.
        ip(netns, "route", "del", "10.13.48.0/20", "via", "192.0.2.11", "dev", "eth0")
        ip(netns, "route", "add", "10.13.48.0/20", "via", "10.13.48.0", "dev", "flannel.100", "onlink")
        assert run_in(netns, args)["drift"] == [
            "10.13.48.0/20 (192.0.2.11): no route 10.13.48.0/20 via 192.0.2.11",
            "route 10.13.48.0/20 via 10.13.48.0 matches no peer lease"]
        assert sorted(backend.sync(peers)) == ["added route 10.13.48.0/20 via 192.0.2.11 dev eth0",
                                               "removed stale route 10.13.48.0/20 via 10.13.48.0 dev flannel.100 onlink"]
        assert run_in(netns, args)["in_sync"] is True
    finally:
        ipr.close()


def test_wireguard_peers_against_the_leases():
    from ansible_collections.netlab.flannel.plugins.modules.overlay_info import compare_wireguard_peers

    key_a, key_b = "A" * 43 + "=", "B" * 43 + "="
    lease = {"subnet": "10.1.0.0/20", "network": "10.0.0.0/8"}
    peers = [{"subnet": "10.1.0.0/20", "public_ip": "192.0.2.1", "backend_data": None},
             {"subnet": "10.2.0.0/20", "public_ip": "192.0.2.2", "backend_data": {"PublicKey": key_a, "Port": 51820}}]
    held = {"peers": [{"public_key": key_a, "endpoint": "192.0.2.2:51820", "allowed_ips": ["10.2.0.0/20"],
                       "latest_handshake": 7}]}
    state = {"routes": [{"dst": "10.0.0.0/8", "gateway": None, "onlink": False}]}
    status, drift = compare_wireguard_peers(held, state, peers, lease, IPNetwork)
    assert drift == [] and status == [{"subnet": "10.2.0.0/20", "public_ip": "192.0.2.2", "peer": True,
                                       "latest_handshake": 7}]
    held["peers"].append({"public_key": key_b, "endpoint": "192.0.2.9:51820", "allowed_ips": ["10.9.0.0/20"],
                          "latest_handshake": 0})
    held["peers"][0]["endpoint"] = "192.0.2.3:51820"
    _status, drift = compare_wireguard_peers(held, {"routes": []}, peers, lease, IPNetwork)
    assert drift == ["10.2.0.0/20 (192.0.2.2): wrong peer %s endpoint 192.0.2.2:51820 allowed ips 10.2.0.0/20" % key_a,
                     "peer %s matches no lease" % key_b, "no route 10.0.0.0/8 dev flannel-wg"]
    assert compare_wireguard_peers(None, state, peers, lease, IPNetwork)[1] == [
        "flannel-wg: no WireGuard answers for the device"]
