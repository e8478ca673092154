"""HostGwBackend on real routes: three host namespaces on one LAN, hand-made leases."""

import logging

import pytest
from netaddr import IPNetwork

from ansible_collections.netlab.flannel.plugins.module_utils.flannel import netlink
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.backends.base import BackendError
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.backends.host_gw import HostGwBackend
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.config import parse_network_config
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.lease import Lease, LeaseAttrs
from support.netns import ping

CONFIG = parse_network_config({"Network": "10.6.0.0/16", "Backend": {"Type": "host-gw"}})
SUBNETS = ["10.6.1.0/24", "10.6.2.0/24", "10.6.3.0/24"]


def host_gw_lease(subnet, public_ip, backend_type="host-gw"):
    return Lease(IPNetwork(subnet), LeaseAttrs(public_ip, backend_type))


def started(host, subnet):
    ipr = host.ipr()
    backend = HostGwBackend(CONFIG, netlink.select_interface(ipr=ipr), host.address, ipr=ipr)
    info = backend.setup()
    assert backend.configure_lease(subnet) == []
    return backend, info


def routes(backend):
    found = netlink.routes_via(backend.iface.index, backend.ipr, inside=CONFIG.network)
    return sorted((route.dst, route.gateway) for route in found)


@pytest.fixture
def backends(three_hosts):
    started_backends = [started(host, subnet)[0] for host, subnet in zip(three_hosts, SUBNETS)]
    leases = dict((subnet, host_gw_lease(subnet, host.address)) for host, subnet in zip(three_hosts, SUBNETS))
    for backend, subnet in zip(started_backends, SUBNETS):
        backend.sync(dict((s, lease) for s, lease in leases.items() if s != subnet))
    return started_backends, leases


def test_setup_reports_interface_mtu_and_no_mac(three_hosts):
    _backend, info = started(three_hosts[0], SUBNETS[0])
    assert info == {"backend_type": "host-gw", "vtep_mac": None, "mtu": 1500, "changes": []}


def test_refuses_public_ip_that_is_not_on_the_interface(three_hosts):
    ipr = three_hosts[0].ipr()
    backend = HostGwBackend(CONFIG, netlink.select_interface(ipr=ipr), "203.0.113.9", ipr=ipr)
    with pytest.raises(BackendError) as error:
        backend.setup()
    assert "your PublicIP 203.0.113.9 differs from interface IP 172.31.250.11 (eth0)" in str(error.value)
    assert "not supported by host-gw backend" in str(error.value)


def test_routes_via_peer_public_ips_and_ping(lab, backends):
    first = backends[0][0]
    assert routes(first) == [("10.6.2.0/24", "172.31.250.12"), ("10.6.3.0/24", "172.31.250.13")]
    source = lab.add_container(lab.hosts[0], SUBNETS[0])
    target = lab.add_container(lab.hosts[2], SUBNETS[2])
    assert ping(source.ns, target.address, count=2, timeout=1.5)[:1] == [62]


def test_sync_removes_vanished_peer_restores_deleted_route(lab, backends):
    started_backends, leases = backends
    first = started_backends[0]
    assert first.sync({SUBNETS[1]: leases[SUBNETS[1]]}) == \
        ["removed stale route 10.6.3.0/24 via 172.31.250.13 dev eth0"]
    lab.hosts[0].run(["ip", "route", "del", "10.6.2.0/24"])
    assert first.sync({SUBNETS[1]: leases[SUBNETS[1]]}) == \
        ["added route 10.6.2.0/24 via 172.31.250.12 dev eth0"]
    assert first.sync({SUBNETS[1]: leases[SUBNETS[1]]}) == []
    assert routes(first) == [("10.6.2.0/24", "172.31.250.12")]


def test_routes_outside_the_network_are_left_alone(lab, backends):
    first = backends[0][0]
    lab.hosts[0].run(["ip", "route", "add", "192.0.2.0/24", "via", "172.31.250.12"])
    first.sync({})
    assert lab.hosts[0].run(["ip", "route", "show", "192.0.2.0/24"]).stdout.strip()
    assert routes(first) == []


def test_peer_public_ip_change_by_event(backends):
    started_backends, _leases = backends
    first = started_backends[0]
    assert first.add_peer(host_gw_lease(SUBNETS[2], "172.31.250.14")) == \
        ["updated route 10.6.3.0/24 via 172.31.250.14 dev eth0"]
    assert ("10.6.3.0/24", "172.31.250.14") in routes(first)
    assert first.remove_peer(SUBNETS[2]) == ["removed route 10.6.3.0/24 via 172.31.250.14 dev eth0"]
    assert routes(first) == [("10.6.2.0/24", "172.31.250.12")]


def test_off_link_peer_is_logged_and_others_still_programmed(backends, caplog):
    first = backends[0][0]
    with caplog.at_level(logging.ERROR):
        changes = first.sync({"10.6.9.0/24": host_gw_lease("10.6.9.0/24", "198.51.100.9"),
                              SUBNETS[1]: host_gw_lease(SUBNETS[1], "172.31.250.12")})
    assert "host-gw needs every host on one layer-2 network" in caplog.text
    assert changes == ["removed stale route 10.6.3.0/24 via 172.31.250.13 dev eth0"]
    assert routes(first) == [("10.6.2.0/24", "172.31.250.12")]


def test_leases_outside_the_network_or_over_this_host_program_nothing(lab, backends, caplog):
    first = backends[0][0]
    before = lab.hosts[0].run(["ip", "-j", "route", "show"]).stdout
    with caplog.at_level(logging.WARNING):
        changes = first.add_peer(host_gw_lease("172.31.250.0/24", "172.31.250.12"))
        changes += first.add_peer(host_gw_lease("10.6.0.0/16", "172.31.250.12"))
        changes += first.add_peer(host_gw_lease("10.6.4.0/24", "10.6.9.1"))
    assert changes == []
    assert "172.31.250.0/24 is outside the flannel network 10.6.0.0/16" in caplog.text
    assert "10.6.0.0/16 overlaps this host's own subnet 10.6.1.0/24" in caplog.text
    assert "PublicIP 10.6.9.1 is not an IPv4 address outside the flannel network" in caplog.text
    assert lab.hosts[0].run(["ip", "-j", "route", "show"]).stdout == before
